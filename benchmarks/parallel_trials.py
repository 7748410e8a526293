"""Parallel trials end to end: the same launch tuned with K = 1 (serial), K = 2 on this machine (`local`) and
K = 2 on a two-node Ray cluster on loopback (a head and a worker, 1 CPU each). What users feel: the job's end
time, tuning included, beside the trial count, the tuning wall time and the winner's speed.

    python -m benchmarks.parallel_trials [--trials 8] [--steps 300] [--rounds 2] [--modes serial,local2,ray2]
                                         [--json OUT]

The job is `examples/accelerate_loop.py` (a real torch loop under `accelerate launch`), 1 process and 1 thread
per trial (pinned, so that two trials fit 2 cores), tuning micro-batch, precision and data-loader workers.
Modes run interleaved, in reversed order every other round; each run has its own fresh store. Medians per mode.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
MODES = ("serial", "local2", "ray2")


def run(mode: str, folder: Path, trials: int, steps: int, ray_address: str | None) -> dict[str, Any]:
    folder.mkdir(parents=True)
    parallel = [] if mode == "serial" else ["--autoscout-parallel", "2", "--autoscout-executor",
                                            "local" if mode == "local2" else f"ray:{ray_address}"]
    command = [sys.executable, "-m", "autoscout_plugin.cli", "launch", "--autoscout", "--autoscout-trials",
               str(trials), *parallel, "--autoscout-include", "micro_batch_size,precision,num_workers",
               "--autoscout-report", str(folder / "report"), "--autoscout-confirm", "1", "--num_machines", "1",
               "--num_processes", "1", "--num_cpu_threads_per_process", "1", str(ROOT / "examples/accelerate_loop.py"),
               "--steps", str(steps), "--micro-batch", "16", "--accum", "2", "--out", str(folder / "summary.json")]
    env = {**os.environ, "AUTOSCOUT_STORE": str(folder / "store.sqlite"), "PYTHONPATH": str(ROOT),
           "RAY_AUTH_MODE": "disabled"}
    started = time.perf_counter()
    proc = subprocess.run(command, env=env, capture_output=True, text=True, timeout=1800, check=False)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"{mode} failed ({proc.returncode}): {proc.stderr[-3000:]}")
    report = json.loads((folder / "report.json").read_text())
    f2 = [t for t in report["trials"] if t["fidelity"] == "F2"]
    return {"mode": mode, "job_s": round(wall, 1), "tuning_wall_s": round(report["wall_s"], 1),
            "trial_s_sum": round(report["tuning_s"], 1), "trials": len(f2), "best": report["best_config"],
            "best_value": report["best_value"], "baseline_value": report.get("baseline_value"),
            "nodes": sorted({t.get("where") or "driver" for t in f2})}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--modes", default=",".join(MODES))
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    modes = [m for m in args.modes.split(",") if m]
    unknown = [m for m in modes if m not in MODES]
    if unknown or args.trials < 1 or args.rounds < 1:
        parser.error(f"--modes takes {','.join(MODES)}; --trials and --rounds >= 1 (got {args.modes!r})")
    cluster = None
    if "ray2" in modes:
        sys.path.insert(0, str(ROOT))
        from tests.ray_cluster import RayCluster

        cluster = RayCluster(cpus_per_node=1).start()
    runs: list[dict[str, Any]] = []
    try:
        with tempfile.TemporaryDirectory(prefix="autoscout-parallel-bench-") as tmp:
            for round_ in range(args.rounds):
                for mode in modes if round_ % 2 == 0 else modes[::-1]:
                    result = run(mode, Path(tmp) / f"{mode}-{round_}", args.trials, args.steps,
                                 cluster.address if cluster else None)
                    print(json.dumps(result), flush=True)
                    runs.append(result)
    finally:
        if cluster is not None:
            cluster.stop()
    summary = {}
    for mode in modes:
        mine = [r for r in runs if r["mode"] == mode]
        summary[mode] = {k: statistics.median(r[k] for r in mine)
                         for k in ("job_s", "tuning_wall_s", "trial_s_sum", "trials", "best_value")}
        summary[mode]["speedup_vs_baseline"] = statistics.median(
            r["best_value"] / r["baseline_value"] for r in mine if r["baseline_value"])
    print(f"{'mode':8} {'job s':>7} {'tuning wall s':>14} {'sum of trial s':>15} {'trials':>7} {'best/own':>9}")
    for mode, row in summary.items():
        print(f"{mode:8} {row['job_s']:7.1f} {row['tuning_wall_s']:14.1f} {row['trial_s_sum']:15.1f}"
              f" {row['trials']:7.0f} {row['speedup_vs_baseline']:9.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps({"runs": runs, "summary": summary}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
