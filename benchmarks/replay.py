"""Replay benchmark: run every optimizer against a ground-truth table, offline.

    python -m benchmarks.replay --table benchmarks/tables/gpt2_50k.csv [--seeds 20] [--budget 20]
                                [--json OUT.json] [--optimizers autoscout,random,...] [--scenario NAME]
                                [--parallel K]

The optimizer asks, the table answers (samples/s, status, trial seconds, error text); nothing is
re-run. The space comes from the table itself (format: benchmarks/README.md): every non-result column
is a knob, its values are the distinct values in the table (the knob's catalogue default first), its
kind comes from the catalogue, a knob left empty in some rows is conditional. A candidate the table
lacks is answered `invalid` (a trial that cost no seconds). A failed row's `error` text is what the
failure is classified from (`autoscout_plugin.failures`), as a live trial's exception would be.

`--scenario` lays a fault over the table (`benchmarks.synthetic.SCENARIOS`: bf16 or DDP failing
everywhere, an out-of-memory line, 10% transient failures). Every optimizer runs under the tuner's
retry rule: a transient failure is retried once (both runs count as trials) and is not told to the
optimizer; a second one in a row counts as a crash.

`--parallel K` runs K trials at once, in synchronous rounds: each round the optimizer proposes a batch
(`SearchStrategy.ask_batch`), the table answers every config of it, all are told, then the next round
starts. A round holds at most K trials, and the last ones fewer, so that no run exceeds `--budget`
trials. A transient failure is retried as the first trial of the next round (taking one of its K slots;
the batch is asked with it pending, so the optimizer neither proposes it again nor ignores it). With
K = 1 this is the sequential loop, trial for trial. Besides trials to 95% the replay reports the rounds
to 95% (the round of the trial that first reaches 95% of the oracle; a run that never does counts the
whole budget's rounds, ceil(budget / K)).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import multiprocessing
import os
import random
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autoscout_plugin.costmodel import CostModel, Hardware, Workload
from autoscout_plugin.search import SearchExhausted, make_strategy, strategy_names
from autoscout_plugin.space import (
    CATALOGUE,
    Condition,
    Config,
    Constraint,
    GlobalBatch,
    Implies,
    MaxProduct,
    Space,
    make_knob,
    parse_cell,
)
from autoscout_plugin.trial import Trial
from benchmarks.synthetic import SCENARIOS, apply_scenario, transient_failure

RESULT_COLUMNS = ("samples_per_s", "peak_rss_mb", "peak_mem_mb", "trial_wall_s", "status", "error")
RATIO_AT = (5, 10, 20)


@dataclass
class Table:
    """A ground-truth table: its rows keyed by config, and the space derived from it."""

    name: str
    space: Space
    rows: dict[str, dict[str, Any]]
    meta: dict[str, Any] = field(default_factory=dict)
    scenario: str | None = None
    """The fault laid over the measured rows (`benchmarks.synthetic.SCENARIOS`), if any."""

    @property
    def oracle(self) -> float:
        return max(r["samples_per_s"] for r in self.rows.values() if r["status"] == "ok")

    @property
    def transient_rate(self) -> float:
        return SCENARIOS[self.scenario].transient_rate if self.scenario else 0.0

    def answer(self, config: Config, rng: random.Random | None = None) -> Trial:
        """The table's measurement of `config`; with a transient scenario and `rng`, sometimes a
        transient failure instead."""
        row = self.rows.get(self.space.key(config))
        failing = SCENARIOS[self.scenario].failing if self.scenario else None
        if row is None and failing is not None and failing(config):
            # A gap in the table, but the machine's fault fails this setting whatever its row would be.
            row = apply_scenario(str(self.scenario), [(config, {"status": "ok", "trial_wall_s": 0.0})])[0]
        if row is None:
            return Trial(config=config, status="invalid", cost_s=0.0, error="not in the table")
        if rng is not None and self.transient_rate and rng.random() < self.transient_rate:
            row = transient_failure(row)
        if row["status"] != "ok":
            return Trial(config=config, status=row["status"], cost_s=row["trial_wall_s"], error=row.get("error"))
        return Trial(config=config, status="ok", value=row["samples_per_s"], cost_s=row["trial_wall_s"],
                     peak_mem_mb=row.get("peak_mem_mb"))

    def cost_model(self) -> CostModel | None:
        if "workload" not in self.meta or "hardware" not in self.meta:
            return None
        return CostModel(Workload.from_json(self.meta["workload"]), Hardware.from_json(self.meta["hardware"]))


# ---------------------------------------------------------------- table -> space
def _parse_rows(path: Path) -> tuple[list[str], list[dict[str, Any]]]:
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        if reader.fieldnames is None:
            raise ValueError(f"{path}: empty table (no header row)")
        knobs = [c for c in reader.fieldnames if c not in RESULT_COLUMNS]
        missing = [c for c in ("samples_per_s", "status") if c not in reader.fieldnames]
        if missing:
            raise ValueError(f"{path}: missing result column(s) {missing}; see benchmarks/README.md for the"
                             " table format")
        rows = []
        for line, raw in enumerate(reader, start=2):
            try:
                row = {k: parse_cell(k, raw[k]) for k in knobs if raw.get(k, "").strip() != ""}
                status = (raw.get("status") or "ok").strip()
                value = float(raw["samples_per_s"]) if raw.get("samples_per_s", "").strip() else math.nan
                if status == "ok" and not (value > 0):
                    status = "error"
                mem = raw.get("peak_mem_mb") or raw.get("peak_rss_mb") or ""
                row["_result"] = {"samples_per_s": value, "status": status,
                                  "trial_wall_s": float(raw.get("trial_wall_s") or 0.0),
                                  "peak_mem_mb": float(mem) if mem.strip() else None,
                                  "error": (raw.get("error") or "").strip() or None}
            except (ValueError, KeyError) as exc:
                raise ValueError(f"{path}:{line}: cannot parse row: {exc}") from exc
            rows.append(row)
    if not rows:
        raise ValueError(f"{path}: the table has no rows")
    return knobs, rows


def _condition_for(name: str, rows: list[dict[str, Any]], earlier: list[str]) -> tuple[Condition, ...]:
    """The parent whose values decide whether `name` is present, catalogue first, else from the data."""
    present = [r for r in rows if name in r]
    if len(present) == len(rows):
        return ()
    spec = CATALOGUE.get(name)
    candidates = ([spec.parent] if spec and spec.parent in earlier else []) + [p for p in earlier if p != name]
    for parent in candidates:
        on = {r.get(parent) for r in present}
        off = {r.get(parent) for r in rows if name not in r}
        if None not in on and not on & off:
            return (Condition(parent, tuple(sorted(on, key=str))),)
    raise ValueError(f"knob {name!r} is empty in some rows, but no other knob's value explains when;"
                     " fill the column or add the knob that decides it")


def _ordered(knobs: list[str]) -> list[str]:
    order = {name: i for i, name in enumerate(CATALOGUE)}
    return sorted(knobs, key=lambda k: (order.get(k, len(order)), knobs.index(k)))


def _catalogue_constraints(knob_names: list[str], rows: list[dict[str, Any]], meta: dict[str, Any]) -> list[Constraint]:
    """Domain constraints from the catalogue, kept only where every row of the table satisfies them."""
    out: list[Constraint] = []
    workload, hardware = meta.get("workload", {}), meta.get("hardware", {})
    if "micro_batch_size" in knob_names and workload.get("global_batch"):
        out.append(GlobalBatch(int(workload["global_batch"])))
    if {"strategy", "num_processes"} <= set(knob_names):
        procs = sorted({r["num_processes"] for r in rows if "num_processes" in r})
        multi = tuple(p for p in procs if p > 1)
        out.append(Implies("strategy", ("single",), "num_processes", (1,)))
        if multi:
            out.append(Implies("strategy", ("ddp", "fsdp", "deepspeed"), "num_processes", multi))
    if "num_threads" in knob_names and hardware.get("kind", "cpu") == "cpu" and hardware.get("cores"):
        out.append(MaxProduct(tuple(k for k in ("num_threads", "num_processes") if k in knob_names),
                              int(hardware["cores"]), "cores"))
    return [c for c in out if all(c.violation({k: v for k, v in r.items() if k != "_result"}) is None for r in rows)]


def load_table(path: str | Path, scenario: str | None = None) -> Table:
    """Read `NAME.csv` (and `NAME.json` beside it, if present) and derive the space; `scenario` lays
    a fault over the rows (see `benchmarks.synthetic.SCENARIOS`)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no table at {path}; pass a CSV in the ground-truth table format"
                                " (benchmarks/README.md)")
    meta_path = path.with_suffix(".json")
    meta = json.loads(meta_path.read_text(encoding="utf-8")) if meta_path.is_file() else {}
    names, rows = _parse_rows(path)
    if "grad_accum" in names and meta.get("workload", {}).get("global_batch"):
        names.remove("grad_accum")  # derived from the global batch, not searched
    names = _ordered([n for n in names if any(n in r for r in rows)])
    knobs = []
    for i, name in enumerate(names):
        default = CATALOGUE[name].default if name in CATALOGUE else None
        # The knob's default first (a grid walks from what the user has), then in sorted order.
        values = sorted({r[name] for r in rows if name in r}, key=lambda v: (v != default, str(type(v)), v))
        knobs.append(make_knob(name, values, when=_condition_for(name, rows, names[:i])))
    space = Space(knobs, _catalogue_constraints(names, rows, meta))
    configs = [space.canonical({k: v for k, v in row.items() if k in names}, allow_inactive=True) for row in rows]
    results = [row["_result"] for row in rows]
    if scenario is not None:
        results = apply_scenario(scenario, list(zip(configs, results)))
    by_key: dict[str, dict[str, Any]] = {}
    for config, result in zip(configs, results):
        by_key.setdefault(space.key(config), result)
    if not any(r["status"] == "ok" for r in by_key.values()):
        raise ValueError(f"{path}: no row ran ok" + (f" under scenario {scenario!r}" if scenario else ""))
    name = path.stem + (f"+{scenario}" if scenario else "")
    return Table(name=name, space=space, rows=by_key, meta=meta, scenario=scenario)


# ---------------------------------------------------------------------- replay
@dataclass
class Run:
    values: list[float | None]
    costs: list[float]
    configs: list[Config] = field(default_factory=list)
    failures: list[str | None] = field(default_factory=list)
    rounds: list[int] = field(default_factory=list)
    """The round each trial ran in (1-based; empty: one trial a round)."""
    parallel: int = 1
    """Trials a round (`--parallel`)."""

    def add(self, trial: Trial, round_: int | None = None) -> None:
        self.values.append(trial.value if trial.ok else None)
        self.costs.append(trial.cost_s)
        self.configs.append(trial.config)
        self.failures.append(trial.failure)
        self.rounds.append(len(self.rounds) + 1 if round_ is None else round_)


def replay_one(table: Table, optimizer: str, seed: int, budget: int, parallel: int = 1) -> Run:
    """One run of `optimizer` on `table`: synchronous rounds of up to `parallel` trials (see the module
    docstring), at most `budget` trials in all."""
    if parallel < 1:
        raise ValueError(f"parallel must be >= 1, got {parallel}")
    options: dict[str, Any] = {}
    name = optimizer
    if optimizer == "autoscout":
        options["cost_model"] = table.cost_model()
    elif optimizer == "autoscout_no_f0":
        name = "autoscout"
    strategy = make_strategy(name, table.space, seed=seed, **options)
    faults = random.Random(f"{table.name}/{optimizer}/{seed}")  # transient failures, same for a seed
    run = Run([], [], parallel=parallel)
    retry: list[Config] = []  # the last round's transient failures: the next round's first trials
    round_ = 0
    while len(run.values) < budget:
        room = min(parallel, budget - len(run.values))
        batch, retry = retry[:room], []
        retried = len(batch)
        if len(batch) < room:
            try:
                batch += strategy.ask_batch(room - len(batch), pending=batch)
            except SearchExhausted:
                if not batch:
                    break
        round_ += 1
        trials = []
        for i, config in enumerate(batch):
            trial = table.answer(config, faults)
            if trial.failure == "transient" and i < retried:
                trial.failure = "crash"  # the tuner's rule: a transient failure is retried once only
            run.add(trial, round_)
            trials.append(trial)
        for config, trial in zip(batch, trials):
            if trial.failure == "transient":
                retry.append(config)  # not told; retried if the budget has room for it
            else:
                strategy.tell(trial)
    return run


def _metrics(run: Run, oracle: float, budget: int, failing: Any = None) -> dict[str, Any]:
    best, reached = 0.0, None
    best_at: list[float] = []
    for i, value in enumerate(run.values):
        best = max(best, value or 0.0)
        best_at.append(best)
        if reached is None and best >= 0.95 * oracle:
            reached = i + 1
    if reached is not None:
        trials, seconds = reached, sum(run.costs[:reached])
        rounds = run.rounds[reached - 1] if run.rounds else reached
    else:
        n = max(len(run.values), 1)
        trials, seconds = budget, sum(run.costs) * budget / n
        rounds = math.ceil(budget / run.parallel)  # the whole budget, in rounds
    ratio = {str(k): (best_at[min(k, len(best_at)) - 1] if best_at else 0.0) / oracle for k in RATIO_AT}
    on_failing = sum(1 for c in run.configs if failing(c)) if failing is not None else None
    return {"trials": trials, "rounds": rounds, "seconds": seconds, "ratio": ratio, "reached": reached is not None,
            "failing_trials": on_failing, "failed_trials": sum(1 for f in run.failures if f is not None)}


def _replay_seed(args: tuple[Table, str, int, int, int]) -> dict[str, Any]:
    table, optimizer, seed, budget, parallel = args
    failing = SCENARIOS[table.scenario].failing if table.scenario else None
    return _metrics(replay_one(table, optimizer, seed, budget, parallel), table.oracle, budget, failing)


def replay(table: Table, optimizers: Sequence[str], seeds: int, budget: int, jobs: int = 1,
           parallel: int = 1) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if jobs > 1:  # one BLAS thread per worker: `jobs` workers share the cores, none oversubscribes them
        for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ.setdefault(name, "1")
    pool = multiprocessing.get_context("spawn").Pool(jobs) if jobs > 1 else None
    try:
        for optimizer in optimizers:
            start = time.perf_counter()
            work = [(table, optimizer, seed, budget, parallel) for seed in range(seeds)]
            runs = pool.map(_replay_seed, work) if pool else [_replay_seed(w) for w in work]
            out[optimizer] = _summary(runs, table, seeds, budget, time.perf_counter() - start, parallel)
    finally:
        if pool is not None:
            pool.close()
            pool.join()
    return out


def _summary(runs: list[dict[str, Any]], table: Table, seeds: int, budget: int, wall_s: float,
             parallel: int = 1) -> dict[str, Any]:
    out = {
        "median_trials_to_95": statistics.median(r["trials"] for r in runs),
        "median_rounds_to_95": statistics.median(r["rounds"] for r in runs),
        "median_seconds_to_95": round(statistics.median(r["seconds"] for r in runs), 1),
        "median_ratio_at": {str(k): round(statistics.median(r["ratio"][str(k)] for r in runs), 4) for k in RATIO_AT},
        "reached_95_share": sum(r["reached"] for r in runs) / len(runs),
        "median_failed_trials": statistics.median(r["failed_trials"] for r in runs),
        "table": table.name, "seeds": seeds, "budget": budget, "parallel": parallel, "wall_s": round(wall_s, 1),
    }
    if runs and runs[0]["failing_trials"] is not None:  # trials spent on the setting that fails everywhere
        spent = [r["failing_trials"] for r in runs]
        out["failing_trials"] = {"median": statistics.median(spent), "max": max(spent)}
    return out


def format_results(table: Table, results: dict[str, Any]) -> str:
    failing = any("failing_trials" in r for r in results.values())
    parallel = next((r.get("parallel", 1) for r in results.values()), 1)
    lines = [f"table {table.name}: {len(table.rows)} configs, oracle {table.oracle:.2f} samples/s,"
             f" {parallel} trial(s) a round",
             "| optimizer | trials to 95% | rounds to 95% | seconds to 95% | best/oracle @5 | @10 | @20 |"
             " failed trials |" + (" on the failing setting (median / max) |" if failing else ""),
             "|---|---|---|---|---|---|---|---|" + ("---|" if failing else "")]
    for name, r in results.items():
        ratio = r["median_ratio_at"]
        line = (f"| {name} | {r['median_trials_to_95']} | {r['median_rounds_to_95']} |"
                f" {r['median_seconds_to_95']} | {ratio['5']:.3f} |"
                f" {ratio['10']:.3f} | {ratio['20']:.3f} | {r['median_failed_trials']} |")
        if failing:
            line += f" {r['failing_trials']['median']} / {r['failing_trials']['max']} |"
        lines.append(line)
    return "\n".join(lines)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    names = ["autoscout", "autoscout_no_f0"] + [n for n in strategy_names() if n != "autoscout"]
    parser = argparse.ArgumentParser(prog="python -m benchmarks.replay", description=__doc__.split("\n")[0])
    parser.add_argument("--table", required=True, help="ground-truth CSV (NAME.json beside it is optional)")
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--budget", type=int, default=20)
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--jobs", type=int, default=1, help="seeds replayed in parallel processes")
    parser.add_argument("--optimizers", default=",".join(names), help=f"comma-separated subset of {names}")
    scenarios = "; ".join(f"{k}: {v.doc}" for k, v in SCENARIOS.items()).replace("%", "%%")  # argparse formats help
    parser.add_argument("--scenario", choices=sorted(SCENARIOS), help=f"lay a fault over the table: {scenarios}")
    parser.add_argument("--parallel", type=_positive_int, default=1, metavar="K",
                        help="trials run at once: synchronous rounds of K (`ask_batch(K)`), 1: sequential")
    args = parser.parse_args(argv)
    chosen = [o.strip() for o in args.optimizers.split(",") if o.strip()]
    unknown = [o for o in chosen if o not in names]
    if unknown:
        parser.error(f"unknown optimizer(s) {unknown}; choose from {names}")
    if args.seeds < 1 or args.budget < 1:
        parser.error(f"--seeds and --budget must be >= 1 (got {args.seeds}, {args.budget})")
    table = load_table(args.table, args.scenario)
    if table.cost_model() is None and "autoscout" in chosen:
        print(f"note: {args.table} has no JSON workload description; autoscout runs without F0", file=sys.stderr)
    results = replay(table, chosen, args.seeds, args.budget, max(args.jobs, 1), args.parallel)
    print(format_results(table, results))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
