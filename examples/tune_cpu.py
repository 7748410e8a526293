"""The engine without a framework: a real AutoScout tuning run on this CPU through `Tuner` directly.

    python -m examples.tune_cpu [--workload gpt2] [--trials 8] [--store PATH] [--report OUT.json]

GPT-2 built from a config (2 layers, d_model 128, its 50k vocabulary), synthetic tokens, AdamW.
Every trial trains real steps in fresh processes (two-process DDP and FSDP over gloo included), with
a timeout; the search is AutoScout's hybrid search with the calibrated cost model as F0. The user's
"defaults" (one process, fp32, no compile, no checkpointing, the whole batch in one micro-batch, all
cores) are measured first, so the speed-up is against them. Run it twice with the same `--store` and
the second run reuses the winner with zero trials.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from autoscout_plugin.costmodel import Workload, detect_cpu
from autoscout_plugin.profiling import TrialOutcome
from autoscout_plugin.report import make_verdict
from autoscout_plugin.space.builder import build_space
from autoscout_plugin.trial import Fidelity, Trial
from autoscout_plugin.tuner import TuneOptions, Tuner
from benchmarks.measure import TrialConfig, run_trial
from benchmarks.workloads import SPECS

TABLES = Path(__file__).resolve().parent.parent / "benchmarks" / "tables"
SIDE_CARS = {"gpt2": "gpt2_50k.json", "cnn": "cnn_small.json", "encoder": "bert_encoder.json"}
KNOBS = ["strategy", "num_processes", "precision", "activation_checkpointing", "compile", "micro_batch_size",
         "num_threads"]


def describe(workload: str) -> dict[str, Any]:
    """The workload description: the committed table's sidecar, or built from the model."""
    sidecar = TABLES / SIDE_CARS[workload]
    if sidecar.is_file():
        return dict(json.loads(sidecar.read_text(encoding="utf-8"))["workload"])
    from benchmarks.workloads import build

    return build(workload).describe()


def make_profiler(workload: str, timeout_s: float):
    """A profiler that trains `config` for a few steps in fresh processes (benchmarks.measure)."""

    def profile(config: dict[str, Any], fidelity: Fidelity) -> TrialOutcome:
        cfg = TrialConfig(**{k: config[k] for k in KNOBS})
        result = run_trial(workload, cfg, timeout_s)
        return TrialOutcome(status=result.status, value=result.samples_per_s, cost_s=result.trial_wall_s,
                            peak_mem_mb=result.peak_rss_mb, error=result.message or None)

    return profile


def progress(trial: Trial, tuner: Tuner) -> None:
    value = f"{trial.value:8.2f} samples/s" if trial.value is not None else f"{trial.status:>8}"
    conf = " ".join(f"{k}={trial.config[k]}" for k in KNOBS if k in trial.config)
    print(f"[autoscout] trial {trial.number:2d} {trial.fidelity.value} {value}  {trial.cost_s:5.1f} s  {conf}",
          flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workload", choices=sorted(SPECS), default="gpt2")
    parser.add_argument("--trials", type=int, default=8, help="F2 trials, the baseline included")
    parser.add_argument("--confirm", type=int, default=2, help="best configs re-measured (F3) before choosing")
    parser.add_argument("--store", help="SQLite trial store (default: a temporary one)")
    parser.add_argument("--report", help="write the result as JSON here")
    parser.add_argument("--timeout", type=float, default=240.0, help="seconds before a trial is killed")
    args = parser.parse_args(argv)

    workload = Workload.from_json(describe(args.workload))
    hardware = detect_cpu()
    space = build_space(workload.to_json(), hardware.to_json(), include=KNOBS, strategies=("single", "ddp", "fsdp"))
    baseline = {"strategy": "single", "num_processes": 1, "precision": "32-true", "activation_checkpointing": False,
                "compile": "off", "micro_batch_size": workload.global_batch, "num_threads": hardware.cores}
    with tempfile.TemporaryDirectory() as tmp:
        store = args.store or str(Path(tmp) / "trials.sqlite")
        options = TuneOptions(max_trials=args.trials, confirm_top=args.confirm, store=store)
        print(f"[autoscout] tuning {args.workload} on {hardware.name} ({hardware.cores} cores): "
              f"{len(space.enumerate())} feasible configs, budget {args.trials} trials + {args.confirm} confirmations",
              flush=True)
        result = Tuner(space, make_profiler(args.workload, args.timeout), options, workload=workload,
                       hardware=hardware, baseline=baseline, on_trial=progress).run()
    print(result.table())
    print(f"verdict: {make_verdict(result).sentence}")
    if result.best_config is not None:
        print(f"apply: {result.best_config} with grad_accum={result.derived.get('grad_accum')}")
    if args.report:
        result.save(args.report)
    return 0 if result.best_config is not None else 1


if __name__ == "__main__":
    sys.exit(main())
