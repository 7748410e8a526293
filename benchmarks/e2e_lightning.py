"""End-to-end Lightning benchmark: tuning plus a main run against Lightning's defaults and against the
best row of the model's ground-truth table (or, for a model without one, a hand-tuned config).

    python -m benchmarks.e2e_lightning [--models gpt2,encoder] [--steps 100] [--trials 8] [--json OUT]
    python -m benchmarks.e2e_lightning --models gpt2_124m --steps 100    # on a GPU (benchmarks/device_h200.sh)

For each model, three commands run one after the other, each a fresh process timed from start to exit:
- `default`: `Trainer(max_steps=N)` with the whole global batch in one micro-batch, all cores, fp32;
- `autoscout`: the same script with `AutoScoutCallback` (fresh trial store), which tunes and then runs
  the same N steps with the winner (re-running the script when the winner needs two processes);
- `table_best`: the table's best config set by hand (`Trainer(strategy=..., devices=...)`, batch
  size, accumulation, threads); for `gpt2_124m` (GPT-2 small, for a GPU: no table) `hand_tuned`
  instead: what an engineer sets by hand on a GPU, `precision="bf16-mixed"` with the whole global batch
  in one micro-batch.
Every command runs where Lightning's defaults put it (`accelerator="auto"`: the GPU when there is one).
The main-fit seconds of each come from the script itself, so the projection to a longer main run
(`--project-s`, 15 minutes by default) uses the steady-state speeds and the measured tuning overhead.

`python -m benchmarks.e2e_lightning run --model gpt2 --mode default --steps N` is one such command.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

TABLES = Path(__file__).resolve().parent / "tables"
TABLE_OF = {"gpt2": "gpt2_50k", "encoder": "bert_encoder", "cnn": "cnn_small"}
GPU_MODELS = ("gpt2_124m",)
HAND_TUNED = {"precision": "bf16-mixed"}


def reference_mode(model: str) -> str:
    """What the model's AutoScout run is compared with beside the defaults."""
    return "table_best" if model in TABLE_OF else "hand_tuned"
KNOBS = ("strategy", "num_processes", "precision", "compile", "activation_checkpointing", "micro_batch_size",
         "num_threads")


def table_best(model: str) -> dict[str, Any]:
    """The best `ok` row of the model's ground-truth table, as a config plus its samples/s."""
    import csv

    from autoscout_plugin.space import parse_cell

    with (TABLES / f"{TABLE_OF[model]}.csv").open(newline="", encoding="utf-8") as fh:
        rows = [r for r in csv.DictReader(fh) if r["status"] == "ok"]
    row = max(rows, key=lambda r: float(r["samples_per_s"]))
    config = {k: parse_cell(k, row[k]) for k in KNOBS if row.get(k, "") != ""}
    return {**config, "samples_per_s": float(row["samples_per_s"])}


# ---------------------------------------------------------------- one run (a user's script)
def _module(model: str, batch_size: int, *, workers: int = 0, samples: int | None = None) -> Any:
    """The workload `model` as a LightningModule whose loader reads its `batch_size` and `num_workers`
    attributes (`samples` synthetic samples: by default 32 global batches, at least 256); and its global batch."""
    import lightning.pytorch as pl
    import torch
    from torch.utils.data import DataLoader, Dataset

    from benchmarks.workloads import build

    workload = build(model)

    class Samples(Dataset):
        def __init__(self, n: int) -> None:
            self.data = workload.make_batch(n, 0)

        def __len__(self) -> int:
            return len(next(iter(self.data.values())))

        def __getitem__(self, i: int) -> dict[str, Any]:
            return {k: v[i] for k, v in self.data.items()}

    class WorkloadModule(pl.LightningModule):
        def __init__(self) -> None:
            super().__init__()
            self.model = workload.model
            self.batch_size = batch_size
            self.num_workers = workers

        def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
            return workload.loss_fn(self.model, batch)

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.AdamW(self.parameters(), lr=1e-4)

        def train_dataloader(self) -> DataLoader:
            return DataLoader(Samples(samples or max(256, 32 * workload.spec.global_batch)),
                              batch_size=self.batch_size, shuffle=True, num_workers=self.num_workers)

    return WorkloadModule(), workload.spec.global_batch


def _step_clock() -> Any:
    """A callback that notes the wall time of every optimizer step (the main fit's steady speed)."""
    import lightning.pytorch as pl

    class StepClock(pl.Callback):
        def __init__(self) -> None:
            self.times: dict[int, float] = {}

        def on_train_batch_end(self, trainer: Any, *args: Any) -> None:
            self.times.setdefault(trainer.global_step, time.perf_counter())

        def steady_step_s(self, skip: int = 10) -> float | None:
            steps = sorted(self.times)
            if len(steps) <= skip + 1:
                return None
            first, last = steps[skip], steps[-1]
            return (self.times[last] - self.times[first]) / (last - first)

    return StepClock()


def run(args: argparse.Namespace) -> int:
    import lightning.pytorch as pl
    import torch

    from autoscout_plugin import AutoScoutCallback

    pl.seed_everything(0, verbose=False)
    best = table_best(args.model) if args.mode == "table_best" else {}
    if best.get("num_threads"):
        torch.set_num_threads(int(best["num_threads"]))
    module, global_batch = _module(args.model, 0)
    module.batch_size = global_batch
    kwargs: dict[str, Any] = {"max_steps": args.steps, "logger": False, "enable_checkpointing": False,
                              "enable_progress_bar": False, "enable_model_summary": False}
    clock = _step_clock()
    callbacks = [clock]
    autoscout = None
    if args.mode == "autoscout":
        autoscout = AutoScoutCallback(max_trials=args.trials, store=args.store, report=args.report,
                                      trial_timeout_s=args.trial_timeout, max_seconds=args.max_seconds)
        callbacks.append(autoscout)
    elif args.mode == "hand_tuned":
        kwargs["precision"] = HAND_TUNED["precision"]
    elif args.mode == "table_best":
        procs = int(best.get("num_processes", 1))
        module.batch_size = int(best["micro_batch_size"])
        kwargs["accumulate_grad_batches"] = global_batch // (module.batch_size * procs)
        kwargs["precision"] = best.get("precision", "32-true")
        if best.get("strategy") == "ddp":
            kwargs.update(strategy="ddp", devices=procs, accelerator="cpu")
        if best.get("activation_checkpointing") or best.get("compile", "off") != "off":
            raise SystemExit("table_best with compile or checkpointing is not set by hand here")
    trainer = pl.Trainer(callbacks=callbacks, **kwargs)
    start = time.perf_counter()
    trainer.fit(module)
    fit_s = time.perf_counter() - start
    if trainer.is_global_zero and args.summary_out:
        tuning_s = autoscout.result.wall_s if autoscout is not None and autoscout.result is not None else 0.0
        Path(args.summary_out).write_text(json.dumps({
            "fit_s": fit_s, "steady_step_s": clock.steady_step_s(), "tuning_wall_s": tuning_s,
            "world_size": trainer.world_size, "device": str(trainer.strategy.root_device),
            "device_name": torch.cuda.get_device_name() if trainer.strategy.root_device.type == "cuda" else "cpu",
            "batch_size": module.batch_size, "accumulate": trainer.accumulate_grad_batches,
            "precision": str(trainer.precision), "threads": torch.get_num_threads(),
            "relaunched": bool(autoscout and autoscout.report.get("relaunched")),
            "report": autoscout.report if autoscout else None}, default=str))
    return 0


# ---------------------------------------------------------------- the driver
def _command(model: str, mode: str, steps: int, trials: int, work: Path,
             extra: list[str]) -> tuple[float, dict[str, Any], str]:
    summary = work / f"{model}_{mode}.json"
    cmd = [sys.executable, "-m", "benchmarks.e2e_lightning", "run", "--model", model, "--mode", mode,
           "--steps", str(steps), "--trials", str(trials), "--store", str(work / f"{model}.sqlite"),
           "--report", str(work / f"{model}_report"), "--summary-out", str(summary), *extra]
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(work / f"inductor_{model}")}
    start = time.perf_counter()
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False,
                          cwd=Path(__file__).resolve().parent.parent)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise RuntimeError(f"{mode} run of {model} failed:\n{proc.stderr[-3000:]}")
    data = json.loads(summary.read_text())
    return wall, data, proc.stderr


def measure(model: str, steps: int, trials: int, project_s: float, work: Path,
            extra: list[str] | None = None) -> dict[str, Any]:
    ref = reference_mode(model)
    out: dict[str, Any] = {"model": model, "steps": steps, "reference": ref}
    for mode in ("default", ref, "autoscout"):
        wall, data, log = _command(model, mode, steps, trials, work, extra or [])
        out[mode] = {"wall_s": round(wall, 1), **{k: v for k, v in data.items() if k != "report"}}
        if mode == "autoscout":
            report = json.loads((work / f"{model}_report.json").read_text())
            out[mode]["applied"] = report["notes"].get("applied")
            out[mode]["trials"] = len(report["trials"])
            out[mode]["profiling_s"] = round(report["tuning_s"], 1)
            tail = [line for line in log.splitlines() if line.startswith(("default:", "chosen:", "speed-up"))]
            out[mode]["log"] = tail
        print(f"{model} {mode}: {wall:.1f} s", file=sys.stderr, flush=True)
    # Steady-state seconds per optimizer step (after 10 steps), and the fixed costs around them: process
    # start, model build, tuning, compile in the main fit, relaunch. AutoScout's overhead is what its
    # command spends beyond its steps, minus what the default command spends beyond its own.
    steady = {m: out[m]["steady_step_s"] for m in ("default", ref, "autoscout")}
    fixed = {m: out[m]["wall_s"] - steps * steady[m] for m in steady}
    out["steady_step_s"] = {k: round(v, 4) for k, v in steady.items()}
    out["tuning_overhead_s"] = round(fixed["autoscout"] - fixed["default"], 1)
    out["net_speedup"] = round(out["default"]["wall_s"] / out["autoscout"]["wall_s"], 3)
    out["main_speedup"] = round(steady["default"] / steady["autoscout"], 3)
    out["applied_vs_reference"] = round(steady[ref] / steady["autoscout"], 3)
    projected_steps = project_s / steady["default"]
    out["projected"] = {"main_run_s": project_s, "net_speedup": round(
        project_s / (out["tuning_overhead_s"] + projected_steps * steady["autoscout"]), 3)}
    return out


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["run"]:
        parser = argparse.ArgumentParser(prog="python -m benchmarks.e2e_lightning run")
        parser.add_argument("--model", choices=sorted([*TABLE_OF, *GPU_MODELS]), required=True)
        parser.add_argument("--mode", choices=("default", "autoscout", "table_best", "hand_tuned"), required=True)
        parser.add_argument("--steps", type=int, default=100)
        parser.add_argument("--trials", type=int, default=8)
        parser.add_argument("--store", default=None)
        parser.add_argument("--report", default=None)
        parser.add_argument("--summary-out", default=None)
        parser.add_argument("--trial-timeout", type=float, default=600.0)
        parser.add_argument("--max-seconds", type=float, default=None)
        return run(parser.parse_args(argv[1:]))
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="gpt2,encoder")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--project-s", type=float, default=900.0, help="main-run length for the projection")
    parser.add_argument("--json", default=None)
    parser.add_argument("--trial-timeout", type=float, default=600.0, help="AutoScout's limit per trial")
    parser.add_argument("--max-seconds", type=float, default=None, help="AutoScout's tuning budget in seconds")
    args = parser.parse_args(argv)
    unknown = [m for m in args.models.split(",") if m.strip() not in (*TABLE_OF, *GPU_MODELS)]
    if unknown:
        parser.error(f"unknown model(s) {unknown}; choose from {sorted([*TABLE_OF, *GPU_MODELS])}")
    extra = ["--trial-timeout", str(args.trial_timeout)] + (
        ["--max-seconds", str(args.max_seconds)] if args.max_seconds else [])
    results = []
    with tempfile.TemporaryDirectory(prefix="autoscout-e2e-") as tmp:
        for model in args.models.split(","):
            results.append(measure(model.strip(), args.steps, args.trials, args.project_s, Path(tmp), extra))
            if args.json:  # after each model: a run cut short keeps what it measured
                Path(args.json).parent.mkdir(parents=True, exist_ok=True)
                Path(args.json).write_text(json.dumps(results, indent=2, default=str))
    print("| model | device | steps | default s | autoscout s (trials, profiling s) | reference s | net speed-up"
          " | main-fit speed-up | applied vs reference | projected net speed-up, 15-min run |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        t, ref = r["autoscout"], r["reference"]
        print(f"| {r['model']} | {r['default'].get('device_name')} | {r['steps']} | {r['default']['wall_s']} |"
              f" {t['wall_s']} ({t['trials']}, {t['profiling_s']}) | {ref}: {r[ref]['wall_s']} | {r['net_speedup']}"
              f" | {r['main_speedup']} | {r['applied_vs_reference']} | {r['projected']['net_speedup']} |")
        print(f"  applied: {t['applied']}", file=sys.stderr)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
