"""Tuning cost of a two-node job against one node: the same script, the same knobs and trial budget, the
same two processes, run once as one machine (`--num_processes 2`) and once as two "machines" on this one
(`--num_machines 2`, one process each, two launches meeting on 127.0.0.1 with a c10d rendezvous).

    python -m benchmarks.multinode [--trials 5] [--steps 200] [--rounds 3] [--json OUT]

The job is `examples/accelerate_loop.py` under `autoscout launch --autoscout`, tuning the micro-batch alone
with no confirmation round (the processes are pinned, so both layouts run the same number of trials; data
loader workers are left out: a forked worker of this loop sometimes deadlocks at start, under either layout,
and would cost a trial timeout at random). What the second machine
costs: joining, posting every trial and gathering both machines' results, a rendezvous per trial across
two launchers, and the hand-over to the real run. Layouts run interleaved, in reversed order every other
round; each run has its own fresh store. Medians per layout.
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
LAYOUTS = ("one_node", "two_nodes")


def _command(folder: Path, trials: int, steps: int, launch: list[str]) -> list[str]:
    return [sys.executable, "-m", "autoscout_plugin.cli", "launch", "--autoscout", "--autoscout-trials", str(trials),
            "--autoscout-include", "micro_batch_size", "--autoscout-timeout", "120", "--autoscout-confirm", "0",
            "--autoscout-report",
            str(folder / "report"),
            "--num_cpu_threads_per_process", "1", *launch, str(ROOT / "examples/accelerate_loop.py"),
            "--steps", str(steps), "--micro-batch", "16", "--accum", "2", "--out", str(folder / "summary.json")]


def run(layout: str, folder: Path, trials: int, steps: int) -> dict[str, Any]:
    folder.mkdir(parents=True)
    env = {**os.environ, "AUTOSCOUT_STORE": str(folder / "store.sqlite"), "PYTHONPATH": str(ROOT)}
    if layout == "one_node":
        commands = [_command(folder, trials, steps, ["--num_processes", "2"])]
    else:
        from autoscout_plugin.profiling import free_port

        port = str(free_port())
        commands = [_command(folder, trials, steps, [
            "--num_machines", "2", "--machine_rank", str(rank), "--main_process_ip", "127.0.0.1",
            "--main_process_port", port, "--rdzv_backend", "c10d", "--num_processes", "2"]) for rank in (0, 1)]
    started = time.perf_counter()
    logs = [folder / f"machine{rank}.log" for rank in range(len(commands))]
    procs = [subprocess.Popen(c, env=env, stdout=subprocess.DEVNULL, stderr=log.open("w")) for c, log in
             zip(commands, logs)]
    try:
        for proc in procs:
            proc.wait(timeout=900)
    except subprocess.TimeoutExpired:
        for proc in procs:
            proc.kill()
    wall = time.perf_counter() - started
    if any(p.returncode for p in procs):
        tails = "\n\n".join(f"--- {log.name}\n{log.read_text(errors='replace')[-3000:]}" for log in logs)
        raise RuntimeError(f"{layout} failed: {[p.returncode for p in procs]}:\n{tails}")
    report = json.loads((folder / "report.json").read_text())
    trials_run = report["trials"]
    return {"layout": layout, "job_s": round(wall, 1), "tuning_wall_s": round(report["wall_s"], 1),
            "trial_s_sum": round(report["tuning_s"], 1), "trials": len(trials_run),
            "mean_trial_s": round(report["tuning_s"] / max(len(trials_run), 1), 2),
            "f2": sum(t["fidelity"] == "F2" for t in trials_run), "stop": report["stop_reason"],
            "failed": sum(t["status"] != "ok" for t in trials_run), "best": report["best_config"],
            "best_value": report["best_value"], "baseline_value": report.get("baseline_value")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=5)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json")
    args = parser.parse_args(argv)
    if args.trials < 1 or args.rounds < 1 or args.steps < 1:
        parser.error("--trials, --steps and --rounds take positive integers")
    runs: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="autoscout-multinode-bench-") as tmp:
        for round_ in range(args.rounds):
            for layout in LAYOUTS if round_ % 2 == 0 else LAYOUTS[::-1]:
                result = run(layout, Path(tmp) / f"{layout}-{round_}", args.trials, args.steps)
                print(json.dumps(result), flush=True)
                runs.append(result)
    keys = ("job_s", "tuning_wall_s", "trial_s_sum", "trials", "mean_trial_s", "failed")
    summary = {layout: {k: statistics.median(r[k] for r in runs if r["layout"] == layout) for k in keys}
               for layout in LAYOUTS}
    print(f"{'layout':10} {'job s':>7} {'tuning wall s':>14} {'sum of trial s':>15} {'trials':>7} {'s/trial':>8}"
          f" {'failed':>7}")
    for layout, row in summary.items():
        print(f"{layout:10} {row['job_s']:7.1f} {row['tuning_wall_s']:14.1f} {row['trial_s_sum']:15.1f}"
              f" {row['trials']:7.0f} {row['mean_trial_s']:8.2f} {row['failed']:7.0f}")
    one, two = summary["one_node"], summary["two_nodes"]
    print(f"two nodes / one node: tuning wall {two['tuning_wall_s'] / one['tuning_wall_s']:.2f}x, per trial"
          f" {two['mean_trial_s'] / one['mean_trial_s']:.2f}x, job {two['job_s'] / one['job_s']:.2f}x")
    if args.json:
        Path(args.json).write_text(json.dumps({"runs": runs, "summary": summary}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
