"""Validate the CPU cost model (F0) against the committed ground-truth tables, offline.

    python -m benchmarks.costmodel_cpu [--tables benchmarks/tables] [--draws 20] [--seed 0] [--json OUT]

The goal (the issue): on each table, a Spearman rank correlation of at least 0.8 between predicted
and measured samples/s, after calibrating from at most 3 measured trials, and a median relative
peak-memory error of at most 20%.

Method, per table: choose `n_calib` ok rows, calibrate the table's cost model on them (time and
memory, `costmodel.calibrate`), then score the calibrated model on every ok row of the table:
Spearman of predicted vs measured samples/s, and the median of |pred - meas| / meas of peak memory.
The rows are chosen `draws` times at random (seeded) and once deterministically, "default + 2": the
row a user gets without tuning (one process, fp32, no compile, no checkpointing, all cores, the
table's largest micro-batch; as in benchmarks/README.md) plus the two rows that are, one after the
other, the most different from those already chosen (most knobs differing; ties: table order), a
small space-filling design. A table passes when the median over the random draws meets both goals.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from autoscout_plugin.costmodel import CostModel, Measurement, calibrate

from .replay import _parse_rows, load_table

SPEARMAN_GOAL = 0.8
MEMORY_GOAL = 0.20
DEFAULTS = {"strategy": "single", "num_processes": 1, "precision": "32-true", "compile": "off",
            "activation_checkpointing": False}


def _ok_rows(path: Path) -> tuple[list[dict[str, Any]], np.ndarray, np.ndarray]:
    """The ok rows' configs (cells parsed as the replay benchmark does), samples/s and peak memory."""
    _, rows = _parse_rows(path)
    ok = [r for r in rows if r["_result"]["status"] == "ok"]
    configs = [{k: v for k, v in r.items() if k != "_result"} for r in ok]
    sps = np.array([r["_result"]["samples_per_s"] for r in ok], dtype=float)
    mem = np.array([r["_result"]["peak_mem_mb"] or np.nan for r in ok], dtype=float)
    return configs, sps, mem


def default_index(configs: Sequence[dict[str, Any]], cores: int) -> int:
    """The row closest to a user's defaults: most default knobs, then the most threads up to the
    cores, then the largest micro-batch; ties go to the first row."""
    def score(c: dict[str, Any]) -> tuple[int, int, int]:
        hits = sum(c.get(k, v) == v for k, v in DEFAULTS.items())
        threads = int(c.get("num_threads", cores))
        return hits, threads if threads <= cores else -threads, int(c.get("micro_batch_size", 0))
    return max(range(len(configs)), key=lambda i: (score(configs[i]), -i))


def spread_indices(configs: Sequence[dict[str, Any]], start: int, n: int) -> list[int]:
    """`start`, then greedily the row whose nearest chosen row differs in the most knobs."""
    keys = sorted({k for c in configs for k in c})

    def dist(a: dict[str, Any], b: dict[str, Any]) -> int:
        return sum(a.get(k) != b.get(k) for k in keys)

    chosen = [start]
    while len(chosen) < min(n, len(configs)):
        rest = [i for i in range(len(configs)) if i not in chosen]
        chosen.append(max(rest, key=lambda i: (min(dist(configs[i], configs[j]) for j in chosen), -i)))
    return chosen


def spearman(pred: np.ndarray, meas: np.ndarray) -> float:
    from scipy.stats import spearmanr  # lazy: scipy is slow to import

    return float(spearmanr(pred, meas).statistic)


def score(model: CostModel, configs: Sequence[dict[str, Any]], sps: np.ndarray, mem: np.ndarray,
          ) -> tuple[float, float]:
    """(Spearman of predicted vs measured samples/s, median relative peak-memory error) over all rows."""
    estimates = [model.estimate(c) for c in configs]
    pred_sps = np.array([e.samples_per_s for e in estimates])
    pred_mem = np.array([e.peak_mem_mb for e in estimates])
    have = np.isfinite(mem)
    mem_err = float(np.median(np.abs(pred_mem[have] - mem[have]) / mem[have])) if have.any() else float("nan")
    return spearman(pred_sps, sps), mem_err


def _calibrated(model: CostModel, configs: Sequence[dict[str, Any]], sps: np.ndarray, mem: np.ndarray,
                idx: Sequence[int]) -> CostModel:
    return calibrate(model, [Measurement(configs[i], float(sps[i]),
                                         float(mem[i]) if np.isfinite(mem[i]) else None) for i in idx]).model


def validate_table(path: str | Path, n_calib: int = 3, draws: int = 20, seed: int = 0) -> dict[str, Any]:
    """Score the table's cost model, uncalibrated and calibrated on `n_calib` rows (see module doc)."""
    start = time.perf_counter()
    path = Path(path)
    model = load_table(path).cost_model()
    if model is None:
        raise ValueError(f"{path}: no workload/hardware JSON beside the table; the cost model needs both")
    configs, sps, mem = _ok_rows(path)
    if len(configs) < max(n_calib, 3):
        raise ValueError(f"{path}: {len(configs)} ok rows; at least {max(n_calib, 3)} are needed")
    uncal_rho, uncal_mem = score(model, configs, sps, mem)
    rng = np.random.default_rng(seed)
    rhos, mems = [], []
    for _ in range(draws):
        idx = sorted(int(i) for i in rng.choice(len(configs), size=n_calib, replace=False))
        rho, mem_err = score(_calibrated(model, configs, sps, mem, idx), configs, sps, mem)
        rhos.append(rho)
        mems.append(mem_err)
    default = default_index(configs, model.hardware.cores)
    fixed = spread_indices(configs, default, n_calib)
    fixed_rho, fixed_mem = score(_calibrated(model, configs, sps, mem, fixed), configs, sps, mem)
    out: dict[str, Any] = {
        "table": path.stem, "rows_ok": len(configs), "n_calib": n_calib, "draws": draws, "seed": seed,
        "spearman_uncalibrated": uncal_rho, "memory_error_uncalibrated": uncal_mem,
        "spearman_median": statistics.median(rhos) if rhos else float("nan"),
        "spearman_min": min(rhos) if rhos else float("nan"),
        "spearman_share_ok": sum(r >= SPEARMAN_GOAL for r in rhos) / len(rhos) if rhos else float("nan"),
        "memory_error_median": statistics.median(mems) if mems else float("nan"),
        "memory_error_max": max(mems) if mems else float("nan"),
        "default_plus": {"rows": fixed, "configs": [configs[i] for i in fixed],
                         "spearman": fixed_rho, "memory_error": fixed_mem},
        "spearman_draws": rhos, "memory_error_draws": mems,
    }
    out["pass_spearman"] = bool(out["spearman_median"] >= SPEARMAN_GOAL)
    out["pass_memory"] = bool(out["memory_error_median"] <= MEMORY_GOAL)
    out["pass"] = out["pass_spearman"] and out["pass_memory"]
    out["wall_s"] = round(time.perf_counter() - start, 2)
    return out


def validate_all(tables_dir: str | Path, **options: Any) -> list[dict[str, Any]]:
    """`validate_table` on every CSV in `tables_dir` that has its JSON description beside it."""
    paths = sorted(p for p in Path(tables_dir).glob("*.csv") if p.with_suffix(".json").is_file())
    return [validate_table(p, **options) for p in paths]


def format_results(results: Sequence[dict[str, Any]]) -> str:
    lines = [f"goal: Spearman >= {SPEARMAN_GOAL} (median over draws), peak-memory median error <= {MEMORY_GOAL:.0%}",
             "| table | rows | Spearman median / min (share >= goal) | default+2 | uncalibrated |"
             " mem err median (max) | default+2 | uncal. | pass | s |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        d = r["default_plus"]
        lines.append(
            f"| {r['table']} | {r['rows_ok']} | {r['spearman_median']:.3f} / {r['spearman_min']:.3f}"
            f" ({r['spearman_share_ok']:.0%}) | {d['spearman']:.3f} | {r['spearman_uncalibrated']:.3f} |"
            f" {r['memory_error_median']:.1%} ({r['memory_error_max']:.1%}) | {d['memory_error']:.1%} |"
            f" {r['memory_error_uncalibrated']:.1%} | {'yes' if r['pass'] else 'NO'} | {r['wall_s']} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.costmodel_cpu", description=__doc__.split("\n")[0])
    parser.add_argument("--tables", default=str(Path(__file__).parent / "tables"), help="folder of CSV+JSON tables")
    parser.add_argument("--table", action="append", help="one table (repeatable); overrides --tables")
    parser.add_argument("--n-calib", type=int, default=3)
    parser.add_argument("--draws", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)
    if args.n_calib < 1 or args.draws < 0:
        parser.error("--n-calib must be >= 1 and --draws >= 0")
    options = {"n_calib": args.n_calib, "draws": args.draws, "seed": args.seed}
    if args.table:
        results = [validate_table(p, **options) for p in args.table]
    else:
        results = validate_all(args.tables, **options)
    print(format_results(results))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2), encoding="utf-8")
    return 0 if all(r["pass"] for r in results) else 1


if __name__ == "__main__":
    raise SystemExit(main())
