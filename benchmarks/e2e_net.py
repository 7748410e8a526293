"""Tuning that pays for itself: a job's END TIME, tuning included, under AutoScout's defaults, against the
user's defaults and against the best config of an exhaustive sweep, for three integrations.

    python -m benchmarks.e2e_net [--models lightning,hf,launcher] [--lengths 5,15,60] [--window 40]
        [--sweep-window 20] [--sweep-limit K] [--extras compile,compile_bf16] [--no-net-gain] [--keep-progress]
        [--pin KNOB=VALUE ...] [--json OUT] [--work DIR]

Models (random weights, synthetic data, nothing downloaded), each a user's script run as a fresh process:
- `lightning`: GPT-2 (2 layers, width 128, 50k vocabulary, 128 tokens: `benchmarks.workloads` gpt2), global
  batch 8, `lightning.Trainer`; tuned with `AutoScoutCallback()` in its callbacks;
- `hf`: a BERT classifier (4 layers, width 256, 128 tokens: `benchmarks.e2e_transformers` bert), Hugging Face
  `Trainer`, per-device batch 8, fp32; tuned with `tune_trainer(trainer)` before `trainer.train()`;
- `launcher`: a custom `Accelerator` loop over the minGRU recurrent LM (`benchmarks.workloads` recurrent, global
  batch 32: `benchmarks/net_launch_script.py`) under `accelerate launch`; tuned by
  `python -m autoscout_plugin.cli launch --autoscout ...` in its place.

Runs per model, one fresh process (tree) each:
- default: the script as written: the whole global batch in one micro-batch, no workers, one process, fp32, all
  cores (under `accelerate launch`, accelerate's default of 1 thread per process);
- tuned, per job length L minutes: the same with AutoScout's defaults (fresh store, report and
  TORCHINDUCTOR_CACHE_DIR), told the job's length N_L = round(L*60 / default s/step) optimizer steps
  (`max_steps=N_L`; the launcher: `--steps N_L --autoscout-steps N_L`);
- sweep: every grid point below set by hand (and `--extras`), with a shorter window.
No main loop runs to its end: after W seconds of main-loop steps (`--window` 40 s; `--sweep-window` 20 s) a
callback stops it (rank 0 decides, every rank hears it). Rank 0 writes the wall-clock time (`time.time()`) of
each optimizer step of the main loop, never of a tuning trial (those are separate Trainers or processes).

Grid per model, the global batch kept (micro-batch x accumulation x processes), 12 points in fp32 and bf16
(autocast; whether bf16 pays depends on the CPU: with native bf16 (AVX512-BF16/AMX) it can, without it is 3-20x
slower, so it is measured, not assumed):
- one process, 2 threads: accumulation {1, 2} (micro-batch = the global batch or half of it) x dataloader
  workers {0, 2} x precision {fp32, bf16};
- two DDP processes of 1 thread each: accumulation {1, 2} (micro-batch = global/2 or global/4) x precision
  {fp32, bf16}, no workers: Lightning `Trainer(strategy="ddp", devices=2, accelerator="cpu")`, HF `torchrun
  --standalone --nproc_per_node 2`, launcher `ACCELERATE_USE_CPU=1 accelerate launch --multi_gpu --num_processes 2
  --num_cpu_threads_per_process 1`.
Beside the grid (`--extras`, default both): torch.compile on the default config, in fp32 (`compile`) and in bf16
(`compile_bf16`); they count towards the best. Left out: one process with 1 thread (on 2 cores it idles one),
compile with the other grid points (20-60 s per process start each) and activation checkpointing.

From a run's step times t_1..t_n (ends of optimizer steps), the driver's launch time t_0 and k warm steps (`--warm` 3):
  s/step   = (t_n - t_k) / (n - k)                  the main loop's steady speed
  start-up = t_k - t_0 - k * s/step                 everything before the loop runs at that speed: process
                                                    start, imports, model, tuning trials, relaunch, compile
  tuning overhead = tuned start-up - default start-up
  net(L)   = (L*60 + default start-up) / (tuned start-up + N_L * tuned s/step)
             the default job's end time over the tuned job's, both projected to N_L steps (> 1: tuned ends first)
Goals (pass/fail): net >= 0.97 at every L; net at L=60 >= 0.9 x the best config's speed-up over the default; the
main run >= 0.95 of the best's speed (shown per L, judged at the longest L).

Before/after the net-gain rule: `--no-net-gain --sweep-limit 0 --extras none` re-runs default and tuned runs only.
`--keep-progress`: the HF model's tuned runs count the steps of trials that keep the training math as its first
steps (`keep_progress=True`); the main loop then runs N_L less those steps, which net(L) projects.
`python -m benchmarks.e2e_net run --integration lightning|hf ...` is one Lightning or HF run (the launcher's
script is `benchmarks/net_launch_script.py`).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
LAUNCH_SCRIPT = ROOT / "benchmarks" / "net_launch_script.py"
MODELS: dict[str, dict[str, Any]] = {"lightning": {"model": "gpt2", "global_batch": 8},
                                     "hf": {"model": "bert", "global_batch": 8},
                                     "launcher": {"model": "recurrent", "global_batch": 32}}
UNBOUNDED = 1_000_000
"""Planned steps of the default and sweep runs: the window ends them."""
Point = dict[str, Any]
"""A hand-set config: threads (None: the default), accum, workers, procs, bf16, compile."""


# ---------------------------------------------------------------- inside every run: the step clock
class StepLog:
    """Wall-clock times of the main loop's optimizer steps; `step()` says when the window is over. Idle in a
    trial of the script (launcher or Lightning subprocess trial): that is not the main loop."""

    def __init__(self, window_s: float, warm: int, out: str | None) -> None:
        from autoscout_plugin.loop import launch_spec

        self.window_s, self.warm, self.out = window_s, warm, out
        self.times: list[float] = []
        self.active = (launch_spec() or {}).get("mode") != "trial"

    def step(self) -> bool:
        """Note one optimizer step; True once W s of steps (and enough to measure) passed, the same on every rank."""
        if not self.active:
            return False
        self.times.append(time.time())
        stop = len(self.times) > self.warm + 2 and self.times[-1] - self.times[0] >= self.window_s
        import torch
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            flag = torch.tensor([int(stop)])
            dist.broadcast(flag, src=0)  # rank 0's clock decides: no rank waits in an all-reduce for one that left
            stop = bool(flag.item())
        return stop

    def write(self, rank_zero: bool, **info: Any) -> None:
        if self.active and self.out and rank_zero:
            Path(self.out).write_text(json.dumps({"times": self.times, **info}, default=str), encoding="utf-8")


def _tune_options(args: argparse.Namespace) -> dict[str, Any]:
    pin = dict(item.split("=", 1) for item in getattr(args, "pin", None) or [])
    return {"store": args.store, "report": args.report, **({"net_gain": False} if args.no_net_gain else {}),
            **({"keep_progress": True} if getattr(args, "keep_progress", False) else {}),
            **({"pin": pin} if pin else {})}


def run_lightning(args: argparse.Namespace, log: StepLog) -> None:
    import lightning.pytorch as pl
    import torch

    pl.seed_everything(0, verbose=False)
    from benchmarks.e2e_lightning import _module

    global_batch = MODELS["lightning"]["global_batch"]
    module, _ = _module(MODELS["lightning"]["model"], args.micro or global_batch, workers=args.workers,
                        samples=64 * global_batch)
    if args.compile:
        module.model = torch.compile(module.model)
    kwargs: dict[str, Any] = {"max_steps": args.steps, "accumulate_grad_batches": args.accum, "logger": False,
                              "enable_checkpointing": False, "enable_progress_bar": False,
                              "enable_model_summary": False, "default_root_dir": args.out_dir}
    if args.procs > 1:
        kwargs.update(strategy="ddp", devices=args.procs, accelerator="cpu")
    if args.bf16:
        kwargs["precision"] = "bf16-mixed"

    class Clock(pl.Callback):
        last = 0

        def on_train_batch_end(self, trainer: pl.Trainer, *rest: Any) -> None:
            if trainer.global_step != self.last:  # an optimizer step ended (not a micro-batch of an accumulation)
                self.last = trainer.global_step
                trainer.should_stop = log.step() or trainer.should_stop

    callbacks: list[Any] = [Clock()]
    if args.tune:
        from autoscout_plugin import AutoScoutCallback

        callbacks.append(AutoScoutCallback(**_tune_options(args)))
    trainer = pl.Trainer(callbacks=callbacks, **kwargs)
    trainer.fit(module)  # a winner with another process count re-runs this script (mode apply), which writes
    log.write(trainer.is_global_zero, effective={
        "procs": trainer.world_size, "threads": torch.get_num_threads(), "micro": module.batch_size,
        "accum": trainer.accumulate_grad_batches, "workers": module.num_workers, "precision": str(trainer.precision)})


def run_hf(args: argparse.Namespace, log: StepLog) -> None:
    import torch
    from transformers import Trainer, TrainerCallback, TrainingArguments
    from transformers.utils import logging as hf_logging

    from benchmarks.e2e_transformers import model_and_data

    hf_logging.set_verbosity_error()
    net, data = model_and_data(MODELS["hf"]["model"])
    training = TrainingArguments(
        output_dir=str(Path(args.out_dir) / "out"), max_steps=args.steps, report_to="none", save_strategy="no",
        disable_tqdm=True, use_cpu=True, per_device_train_batch_size=args.micro or MODELS["hf"]["global_batch"],
        gradient_accumulation_steps=args.accum, dataloader_num_workers=args.workers, bf16=args.bf16,
        torch_compile=args.compile)

    class Clock(TrainerCallback):
        first_step = 0

        def on_train_begin(self, _args: Any, state: Any, control: Any, **kw: Any) -> None:
            self.first_step = state.global_step  # past the kept trials' steps under keep_progress

        def on_step_end(self, _args: Any, state: Any, control: Any, **kw: Any) -> None:
            if log.step():
                control.should_training_stop = True

    clock = Clock()

    trainer = Trainer(model=net, args=training, train_dataset=data, callbacks=[clock])
    if args.tune:
        from autoscout_plugin.integrations.transformers import tune_trainer

        result = tune_trainer(trainer, **_tune_options(args))
        print(f"tune_trainer chose {result.best_config}", file=sys.stderr, flush=True)
    trainer.train()
    a = trainer.args
    log.write(trainer.is_world_process_zero(), effective={
        "procs": a.world_size, "threads": torch.get_num_threads(), "micro": a.per_device_train_batch_size,
        "accum": a.gradient_accumulation_steps, "workers": a.dataloader_num_workers,
        "precision": "bf16" if a.bf16 else "fp16" if a.fp16 else "fp32", "compile": a.torch_compile,
        "kept_steps": clock.first_step})


def run(args: argparse.Namespace) -> int:
    """One user's script (Lightning or HF): default, hand-set (`--threads --micro ...`) or tuned (`--tune`)."""
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    log = StepLog(args.window, args.warm, args.summary_out)
    (run_lightning if args.integration == "lightning" else run_hf)(args, log)
    return 0


# ---------------------------------------------------------------- the driver
def grid() -> list[Point]:
    """The sweep, in the order it runs (`--sweep-limit K` keeps the first K)."""
    single = [{"procs": 1, "threads": 2, "accum": a, "workers": w, "bf16": b}
              for b in (False, True) for a in (1, 2) for w in (0, 2)]
    ddp = [{"procs": 2, "threads": 1, "accum": a, "workers": 0, "bf16": b} for b in (False, True) for a in (1, 2)]
    return single + ddp


EXTRAS: dict[str, Point] = {
    "compile": {"procs": 1, "threads": None, "accum": 1, "workers": 0, "compile": True},
    "compile_bf16": {"procs": 1, "threads": None, "accum": 1, "workers": 0, "compile": True, "bf16": True}}


def label(point: Point | None, global_batch: int) -> str:
    if point is None:
        return "default"
    micro = global_batch // (point["procs"] * point["accum"])
    procs = f"ddp{point['procs']}" if point["procs"] > 1 else "1p"
    threads = f"t{point['threads']}" if point["threads"] else "tdef"
    extra = "".join(f"-{k}" for k in ("bf16", "compile") if point.get(k))
    return f"{procs}-{threads}-mb{micro}x{point['accum']}-w{point['workers']}{extra}"


def command(integration: str, point: Point | None, steps: int, window: float, args: argparse.Namespace,
            run_dir: Path, tune: bool) -> tuple[list[str], dict[str, str]]:
    """The command line and environment of one run of `integration`'s script."""
    py = sys.executable
    env = {k: v for k, v in os.environ.items() if k != "AUTOSCOUT_LAUNCH"}  # a user's run, not a launcher child
    env |= {"TORCHINDUCTOR_CACHE_DIR": str(run_dir / "inductor"),
            "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)}
    common = ["--steps", str(steps), "--window", str(window), "--warm", str(args.warm),
              "--summary-out", str(run_dir / "summary.json")]
    if point is not None:
        micro = MODELS[integration]["global_batch"] // (point["procs"] * point["accum"])
        common += ["--micro", str(micro), "--accum", str(point["accum"]), "--workers", str(point["workers"])]
    store, report = str(run_dir / "store.sqlite"), str(run_dir / "report")
    no_net_gain = args.no_net_gain
    if integration == "launcher":
        script = [str(LAUNCH_SCRIPT), *common]
        if tune:
            return [py, "-m", "autoscout_plugin.cli", "launch", "--autoscout", "--autoscout-store", store,
                    "--autoscout-report", report, "--autoscout-steps", str(steps),
                    *(["--autoscout-no-net-gain"] if no_net_gain else []), *script], env
        flags: list[str] = []
        if point is not None:
            flags += ["--num_cpu_threads_per_process", str(point["threads"])] if point["threads"] else []
            if point["procs"] > 1:
                flags += ["--multi_gpu", "--num_processes", str(point["procs"])]
                env["ACCELERATE_USE_CPU"] = "1"
            flags += ["--mixed_precision", "bf16"] if point.get("bf16") else []
            flags += ["--dynamo_backend", "inductor"] if point.get("compile") else []
        return [py, "-m", "accelerate.commands.launch", *flags, *script], env
    one = ["-m", "benchmarks.e2e_net", "run", "--integration", integration, "--out-dir", str(run_dir), *common]
    if point is not None:
        one += (["--threads", str(point["threads"])] if point["threads"] else []) + \
            (["--bf16"] if point.get("bf16") else []) + (["--compile"] if point.get("compile") else [])
    if tune:
        one += ["--tune", "--store", store, "--report", report, *(["--no-net-gain"] if no_net_gain else []),
                *(["--keep-progress"] if args.keep_progress and integration == "hf" else []),
                *[f"--pin={item}" for item in args.pin or []]]
    if point is not None and point["procs"] > 1:
        if integration == "lightning":
            one += ["--procs", str(point["procs"])]
        else:
            return [py, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(point["procs"]),
                    *one], env
    return [py, *one], env


def _stop(proc: subprocess.Popen[Any]) -> None:
    """End `proc`'s process group: SIGTERM first (the launcher then stops its trials), SIGKILL 15 s later."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=15.0)
            return


def execute(cmd: list[str], env: dict[str, str], run_dir: Path, timeout_s: float) -> tuple[float, int, str]:
    """Run `cmd` in its own process group, output to `run_dir/log.txt`; (launch time.time(), exit code, log)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    log = run_dir / "log.txt"
    with log.open("w", encoding="utf-8") as fh:
        fh.write(" ".join(cmd) + "\n")
        fh.flush()
        started = time.time()
        proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            code = proc.wait(timeout=timeout_s)
        except BaseException as exc:  # a timeout or Ctrl-C: end the run's processes
            _stop(proc)
            if not isinstance(exc, subprocess.TimeoutExpired):
                raise
            code = -9
    return started, code, log.read_text(encoding="utf-8", errors="replace")


def speeds(times: list[float], launched: float, warm: int) -> dict[str, float]:
    """Steady s/step after `warm` steps, and the start-up: time to step `warm` less `warm` steady steps."""
    if len(times) < warm + 2:
        raise ValueError(f"{len(times)} steps timed; need at least {warm + 2} (lengthen the window)")
    step_s = (times[-1] - times[warm - 1]) / (len(times) - warm)
    return {"step_s": round(step_s, 4), "startup_s": round(times[warm - 1] - launched - warm * step_s, 2)}


def tuning_facts(run_dir: Path, log: str) -> dict[str, Any]:
    """What the tuner did, from its report (and its log lines)."""
    facts: dict[str, Any] = {"log": [line for line in log.splitlines()
                                     if line.startswith(("AutoScout", "applied:", "tune_trainer chose"))][-8:]}
    path = run_dir / "report.json"
    if path.exists():
        report = json.loads(path.read_text(encoding="utf-8"))
        notes = report.get("notes") or {}
        facts.update(applied=notes.get("applied"), relaunched=bool(notes.get("relaunched")),
                     trials=len(report.get("trials") or []), tuning_s=report.get("tuning_s"),
                     stop_reason=report.get("stop_reason"), speedup_in_trials=report.get("speedup"))
    return facts


def one_run(integration: str, point: Point | None, steps: int, window: float, args: argparse.Namespace,
            name: str, tune: bool = False) -> dict[str, Any]:
    run_dir = Path(args.work) / integration / name
    cmd, env = command(integration, point, steps, window, args, run_dir, tune)
    launched, code, log = execute(cmd, env, run_dir, args.run_timeout)
    out: dict[str, Any] = {"name": name, "config": point, "exit_code": code, "log_file": str(run_dir / "log.txt")}
    summary = run_dir / "summary.json"
    try:
        data = json.loads(summary.read_text(encoding="utf-8"))
        out.update(speeds(data["times"], launched, args.warm), steps_timed=len(data["times"]),
                   effective=data.get("effective"), kept_steps=(data.get("effective") or {}).get("kept_steps", 0))
    except (OSError, ValueError, KeyError) as exc:
        tail = "\n".join(log.strip().splitlines()[-12:])
        out["error"] = f"exit {code}, no usable summary ({exc}): {tail[-1500:]}"
    if tune:
        out.update(tuning_facts(run_dir, log))
    shown = out.get("error", "")[:300] or f"{out['step_s']:.3f} s/step, start-up {out['startup_s']:.1f} s" + (
        f", applied {out.get('applied')}" if tune else "")
    print(f"[{time.strftime('%H:%M:%S')}] {integration} {name}: {shown}", file=sys.stderr, flush=True)
    return out


def effective_text(e: dict[str, Any] | None, applied: dict[str, Any] | None = None) -> str:
    if not e:
        return "?"
    procs = f"ddp{e['procs']}" if int(e.get("procs") or 1) > 1 else "1p"
    applied = applied or {}
    extra = [f"compile={applied['compile']}"] if applied.get("compile") not in (None, "off") else []
    extra += ["ckpt"] if applied.get("activation_checkpointing") else []
    return " ".join([f"{procs} t{e.get('threads')} mb{e.get('micro')}x{e.get('accum')} w{e.get('workers')}",
                     str(e.get("precision")), *extra])


def judge(model: dict[str, Any]) -> None:
    """Best sweep point, and per tuned run: overhead, ratio to the best, net, goals."""
    default = model["default"]
    ok = [s for s in model.get("sweep", []) + model.get("extras", []) if "error" not in s]
    best = min(ok, key=lambda s: s["step_s"]) if ok else None
    if best is not None:  # the best of everything set by hand: the grid and the compile points
        model["best"] = {"name": best["name"], "config": best["config"], "step_s": best["step_s"],
                         "speedup": round(default["step_s"] / best["step_s"], 3), "of": len(ok)}
    for t in model.get("tuned", []):
        if "error" in t:
            continue
        t["tuning_overhead_s"] = round(t["startup_s"] - default["startup_s"], 1)
        left = t["planned_steps"] - t.get("kept_steps", 0)  # what the kept trials trained is in the start-up
        t["net"] = round((t["minutes"] * 60 + default["startup_s"]) / (t["startup_s"] + left * t["step_s"]), 3)
        t["main_vs_best"] = round(best["step_s"] / t["step_s"], 3) if best else None
        t["goals"] = {"net>=0.97": t["net"] >= 0.97,
                      "main>=0.95best": None if best is None else t["main_vs_best"] >= 0.95}
        if t["minutes"] == 60 and best is not None:
            t["goals"]["net60>=0.9xbest"] = t["net"] >= 0.9 * model["best"]["speedup"]
    tuned = [t for t in model.get("tuned", []) if "error" not in t]
    if tuned:
        longest = max(tuned, key=lambda t: t["minutes"])
        model["goals"] = {"net >= 0.97 at every L": all(t["goals"]["net>=0.97"] for t in tuned)
                          and len(tuned) == len(model["tuned"]),
                          "net at 60 min >= 0.9 x best speed-up": next(
                              (t["goals"].get("net60>=0.9xbest") for t in tuned if t["minutes"] == 60), None),
                          f"main run >= 0.95 of best (at {longest['minutes']} min)": longest["goals"]["main>=0.95best"]}


def measure_model(integration: str, args: argparse.Namespace, save: Any) -> dict[str, Any]:
    gb = MODELS[integration]["global_batch"]
    model: dict[str, Any] = {"integration": integration, "model": MODELS[integration]["model"], "global_batch": gb,
                             "window_s": args.window, "sweep_window_s": args.sweep_window}
    save(model)
    model["default"] = one_run(integration, None, UNBOUNDED, args.window, args, "default")
    save(model)
    if "error" in model["default"]:
        return model
    model["tuned"] = []
    for minutes in args.lengths:
        steps = max(1, round(minutes * 60 / model["default"]["step_s"]))
        run = one_run(integration, None, steps, args.window, args, f"tuned_{minutes:g}min", tune=True)
        model["tuned"].append({"minutes": minutes, "planned_steps": steps, **run})
        save(model)
    model["sweep"], model["extras"] = [], []
    for point in grid()[:args.sweep_limit]:
        model["sweep"].append(one_run(integration, point, UNBOUNDED, args.sweep_window, args, label(point, gb)))
        save(model)
    for name in args.extras:
        point = EXTRAS[name]
        model["extras"].append(one_run(integration, point, UNBOUNDED, args.sweep_window, args, label(point, gb)))
        save(model)
    return model


def table(models: list[dict[str, Any]]) -> str:
    mark = {True: "pass", False: "FAIL", None: "-"}
    lines = ["| integration (model) | default s/step | best sweep config: s/step (speed-up) | L min | N_L |"
             " tuning overhead s | applied (effective main run) | main s/step | best/main | net |"
             " net>=0.97 | net60>=0.9x best | main>=0.95 best |", "|" + "---|" * 13]
    for m in models:
        d, best = m.get("default", {}), m.get("best")
        head = f"{m['integration']} ({m['model']})"
        if "error" in d or not d:
            lines.append(f"| {head} | failed | | | | | | | | | | | |")
            continue
        best_text = f"{best['name']}: {best['step_s']:.3f} ({best['speedup']:.2f}x)" if best else "-"
        for t in m.get("tuned", []) or [{}]:
            if not t or "error" in t:
                lines.append(f"| {head} | {d['step_s']:.3f} | {best_text} | {t.get('minutes', '')} | "
                             f"{t.get('planned_steps', '')} | failed | | | | | | | |")
                continue
            g = t["goals"]
            lines.append(
                f"| {head} | {d['step_s']:.3f} | {best_text} | {t['minutes']:g} | {t['planned_steps']} |"
                f" {t['tuning_overhead_s']:.1f} | {effective_text(t.get('effective'), t.get('applied'))} |"
                f" {t['step_s']:.3f} | {t['main_vs_best'] if t['main_vs_best'] is not None else '-'} | {t['net']:.3f} |"
                f" {mark[g['net>=0.97']]} | {mark[g.get('net60>=0.9xbest')]} | {mark[g['main>=0.95best']]} |")
    return "\n".join(lines)


def merge(runs: list[list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """One result per integration: the first run's default and tuned runs, with every run's hand-set points."""
    merged: dict[str, dict[str, Any]] = {}
    for models in runs:
        for model in models:
            base = merged.setdefault(model["integration"], model)
            if base is not model:
                for key in ("sweep", "extras"):
                    base[key] = base.get(key, []) + model.get(key, [])
    for model in merged.values():
        if "step_s" in model.get("default", {}):
            judge(model)
    return list(merged.values())


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["run"]:
        p = argparse.ArgumentParser(prog="python -m benchmarks.e2e_net run")
        p.add_argument("--integration", choices=("lightning", "hf"), required=True)
        p.add_argument("--steps", type=int, required=True, help="planned optimizer steps (max_steps)")
        p.add_argument("--window", type=float, default=40.0)
        p.add_argument("--warm", type=int, default=3)
        p.add_argument("--summary-out", default=None)
        p.add_argument("--out-dir", default=tempfile.gettempdir())
        p.add_argument("--threads", type=int, default=None)
        p.add_argument("--micro", type=int, default=None, help="micro-batch per process (default: the global batch)")
        p.add_argument("--accum", type=int, default=1)
        p.add_argument("--workers", type=int, default=0)
        p.add_argument("--procs", type=int, default=1, help="Lightning DDP processes (HF: run under torchrun)")
        p.add_argument("--bf16", action="store_true")
        p.add_argument("--compile", action="store_true")
        p.add_argument("--tune", action="store_true", help="with AutoScout (its defaults)")
        p.add_argument("--store", default=None)
        p.add_argument("--report", default=None)
        p.add_argument("--no-net-gain", action="store_true")
        p.add_argument("--keep-progress", action="store_true", help="tune_trainer(keep_progress=True) (HF)")
        p.add_argument("--pin", action="append", help="KNOB=VALUE held in the tuned run (AutoScoutOptions.pin)")
        return run(p.parse_args(argv[1:]))
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", default="lightning,hf,launcher", help="a subset of lightning,hf,launcher")
    p.add_argument("--lengths", default="5,15,60", help="job lengths L in minutes")
    p.add_argument("--window", type=float, default=40.0, help="seconds of main-loop steps timed per run")
    p.add_argument("--sweep-window", type=float, default=20.0, help="the same for a sweep point")
    p.add_argument("--warm", type=int, default=3, help="steps before the steady speed is timed (>= 1)")
    p.add_argument("--sweep-limit", type=int, default=None, help="only the first K grid points (dry runs)")
    p.add_argument("--extras", default="compile,compile_bf16",
                   help="points beside the grid: compile, compile_bf16, or none")
    p.add_argument("--report", nargs="+", default=None, metavar="JSON",
                   help="no runs: merge these results (the first file's default and tuned runs, every file's sweep"
                        " and extra points), judge them and print the table")
    p.add_argument("--no-net-gain", action="store_true", help="tuned runs with net_gain=False (before/after)")
    p.add_argument("--keep-progress", action="store_true",
                   help="the HF model's tuned runs with keep_progress=True (trial steps count as training)")
    p.add_argument("--pin", action="append", metavar="KNOB=VALUE",
                   help="hold a knob in the Lightning and HF tuned runs (e.g. precision=32-true: a CPU without bf16)")
    p.add_argument("--run-timeout", type=float, default=1800.0, help="seconds before one run is stopped")
    p.add_argument("--work", default=None, help="folder for each run's log, store, report (default: a new temp one)")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    if args.report:
        merged = merge([json.loads(Path(f).read_text(encoding="utf-8")) for f in args.report])
        if args.json:
            Path(args.json).write_text(json.dumps(merged, indent=2, default=str), encoding="utf-8")
        print(table(merged))
        return 0
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    if not models or any(m not in MODELS for m in models):
        p.error(f"--models: choose from {','.join(MODELS)}")
    args.lengths = [float(x) for x in args.lengths.split(",") if x.strip()]
    args.extras = [x.strip() for x in args.extras.split(",") if x.strip() and x.strip() != "none"]
    if any(x not in EXTRAS for x in args.extras):
        p.error(f"--extras: choose from {','.join(EXTRAS)} or none")
    if args.warm < 1:
        p.error("--warm must be >= 1")
    args.work = args.work or tempfile.mkdtemp(prefix="autoscout-net-")
    print(f"runs, logs and reports in {args.work}", file=sys.stderr, flush=True)
    results: list[dict[str, Any]] = []

    def save(model: dict[str, Any]) -> None:  # after every run: a run cut short keeps what it measured
        if not any(m is model for m in results):
            results.append(model)
        if "step_s" in model.get("default", {}):
            judge(model)  # the figures so far
        if args.json:
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(json.dumps(results, indent=2, default=str), encoding="utf-8")

    for integration in models:
        model = measure_model(integration, args, save)
        for name, value in (model.get("goals") or {}).items():
            print(f"{integration}: {name}: {value}", file=sys.stderr)
    print(table(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
