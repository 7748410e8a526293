"""The `--autoscout` launcher: replace `accelerate launch` with `autoscout launch --autoscout`.

    autoscout launch --autoscout [--autoscout-trials 8] [accelerate launch args] train.py [script args]

Without `--autoscout` the command is `accelerate launch` itself. With it, the launcher first runs short
trials of the script, each a real `accelerate launch` of it in its own process group with a timeout:
- launcher knobs become `accelerate launch` flags: `num_processes` and `strategy` (`--num_processes`;
  several CPU processes run as `ACCELERATE_USE_CPU=1 ... --multi_gpu`, a `--cpu` of yours dropped, since
  `--cpu --num_processes 2` starts one process), `precision` (`--mixed_precision`), `compile`
  (`--dynamo_backend inductor`), `num_threads` (`--num_cpu_threads_per_process`), and on GPUs the FSDP2
  options (`--use_fsdp --fsdp_version 2`, `--fsdp_reshard_after_forward`, `--fsdp_offload_params`);
- script knobs reach the script through `AUTOSCOUT_LAUNCH`: it reads them with
  `autoscout_plugin.knob(name, default)` and marks each optimizer step with `autoscout_plugin.step()`,
  which times the trial and ends it. The first trial runs your own settings and records which knobs the
  script reads; its measurement is the search's baseline.

A launcher knob given on the command line (`--num_processes 2`, `--num-processes=2`, ...) is pinned,
not tuned. Every other argument reaches every trial and the real run as written. The search is the
core `Tuner`, with its store: the same command on the same machine later reuses the stored winner
with zero trials. Then the real run starts with the winner (`AUTOSCOUT_LAUNCH` mode `apply`) and its
exit code is the command's. A trial that crashes, hangs or reports a NaN loss is recorded and
survived; when every trial fails the real run goes ahead with your own settings.
"""

from __future__ import annotations

import json
import os
import shlex
import socket
import subprocess
import sys
import tempfile
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from autoscout_plugin.costmodel import Hardware, Workload, measured_efficiency
from autoscout_plugin.loop import DECLARED_ENV, LAUNCH_ENV, NO_STEP_ERROR, stepped_marker, workload_file
from autoscout_plugin.options import default_store
from autoscout_plugin.profiling import TrialOutcome, run_subprocess_trial
from autoscout_plugin.report.html import write_report
from autoscout_plugin.report.result import TuneResult, format_config
from autoscout_plugin.space import Config, Space, SpaceError
from autoscout_plugin.space.builder import build_space
from autoscout_plugin.store import SQLiteStore
from autoscout_plugin.trial import Fidelity
from autoscout_plugin.tuner import Tuner

from ._accelerate_args import LaunchError, LaunchRequest, Plan, launch_command, make_plan, parse
from ._shared import Progress


@dataclass(frozen=True, slots=True, kw_only=True)
class JobWorkload(Workload):
    """A workload the launcher cannot look into, named by its job (the script, its content and
    arguments, the launch options), so two jobs never share a stored winner."""

    job: str = ""


def machine() -> tuple[Hardware, int]:
    """This machine (its GPUs when torch sees any) and its physical core count."""
    import psutil
    import torch

    from ._torch import machine as machine_of

    hardware = machine_of("cuda" if torch.cuda.is_available() else "cpu")
    return hardware, psutil.cpu_count(logical=False) or hardware.cores


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def plain_command(request: LaunchRequest) -> list[str]:
    """`accelerate launch` with the user's arguments exactly (AutoScout's own removed).

    Example:
        >>> from autoscout_plugin.integrations._accelerate_args import parse
        >>> plain_command(parse(["--num-processes=2", "train.py", "--lr", "0.1"]))[1:]
        ['-m', 'accelerate.commands.launch', '--num-processes=2', 'train.py', '--lr', '0.1']
    """
    return [sys.executable, "-m", "accelerate.commands.launch", *request.accelerate_args, request.script,
            *request.script_args]


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in (LAUNCH_ENV, DECLARED_ENV)}


# ---------------------------------------------------------------- declared knobs, per job


def _sidecar(store: str) -> Path:
    return Path(f"{store}.launch.json")


def load_declared(store: str, job: str, what: str = "declared") -> dict[str, Any] | None:
    """The knobs a job's script declared in an earlier run on this store (`what="workload"`: the model it
    described), or None."""
    try:
        entry = json.loads(_sidecar(store).read_text(encoding="utf-8")).get(job)
    except (OSError, ValueError, AttributeError):
        return None
    return dict(entry[what]) if isinstance(entry, dict) and isinstance(entry.get(what), dict) else None


def save_declared(store: str, job: str, declared: dict[str, Any], script: str,
                  workload: dict[str, Any] | None = None) -> None:
    """Remember what the job's script declared, and the model it described (read, merged, written whole,
    renamed)."""
    path = _sidecar(store)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        data = data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        data = {}
    data[job] = {"script": script, "declared": declared, "workload": workload}
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
    partial.write_text(json.dumps(data, indent=1, sort_keys=True), encoding="utf-8")
    os.replace(partial, path)


# ---------------------------------------------------------------- the launcher


class AutoScoutLauncher:
    """Tunes one launch, then runs it with the winner.

    Args:
        request: the parsed command line (`_accelerate_args.parse`).
        hardware: this machine; detected when None (`machine()`).
        physical_cores: for accelerate's default thread count; detected with the hardware.

    Example:
        >>> from autoscout_plugin.integrations._accelerate_args import parse
        >>> launcher = AutoScoutLauncher(parse(["--num-processes=1", "train.py"]), Hardware(kind="cpu", cores=2))
        >>> launcher.request.autoscout, sorted(launcher.request.given)   # plain accelerate launch: no tuning
        (False, ['num_processes'])
    """

    def __init__(self, request: LaunchRequest, hardware: Hardware | None = None,
                 physical_cores: int | None = None) -> None:
        self.request = request
        self.options = request.options
        if hardware is None:
            hardware, physical_cores = machine()
        self.hardware = hardware
        self.physical_cores = physical_cores or hardware.cores
        self.gpu = hardware.kind == "gpu"
        self.store = self.options.store or default_store()
        self.plan: Plan | None = None
        self.space: Space | None = None
        self.result: TuneResult | None = None
        self.report: dict[str, Any] = {}
        self._first: TrialOutcome | None = None
        self._described: dict[str, Any] | None = None
        """The model the script described with `autoscout_plugin.describe()` in a trial."""
        self._baseline: Config | None = None
        self._best: float | None = None

    # ------------------------------------------------------------ entry points
    def run(self) -> int:
        """Tune (or reuse), then run the real job; its exit code."""
        if not self.request.autoscout:
            return self.run_plain()
        return self.run_real(self.decide())

    def run_plain(self) -> int:
        return subprocess.call(plain_command(self.request), env=_clean_env())

    def run_real(self, config: Config | None) -> int:
        """The real run: with `config` (plus derived values) through `AUTOSCOUT_LAUNCH`; with None, your
        own settings (as in the trials: several CPU processes still run as `--multi_gpu`)."""
        command, extra = launch_command(self.request, config or {}, gpu=self.gpu)
        env = {**_clean_env(), **extra}
        if config is not None:
            batch = self.plan.global_batch if self.plan else None
            env[LAUNCH_ENV] = json.dumps({"mode": "apply", "config": config, "warmup": 0, "measure": 0,
                                          "floor": None, "global_batch": batch})
        shown = " ".join(shlex.quote(a) for a in command[3:])
        print(f"AutoScout: real run: accelerate launch {shown}", file=sys.stderr, flush=True)
        return subprocess.call(command, env=env)

    # ------------------------------------------------------------ deciding
    def decide(self) -> Config | None:
        """The config for the real run (with `grad_accum` when derived), or None for your own settings."""
        request, opts = self.request, self.options
        job = request.job_id()
        Path(self.store).parent.mkdir(parents=True, exist_ok=True)
        declared = load_declared(self.store, job)
        if declared is None:
            print("AutoScout: trial 0 runs your own settings and records the knobs the script reads",
                  file=sys.stderr, flush=True)
            self._first, declared, stepped = self._trial({}, Fidelity.F2)
            self._check_steps(self._first, stepped)
            if stepped:  # it reached its loop: every knob read before it is recorded
                save_declared(self.store, job, declared, request.script, self._described)
        else:
            self._described = load_declared(self.store, job, "workload")
        plan = self.plan = make_plan(request, declared, gpus=self.hardware.gpus if self.gpu else 0,
                                     physical_cores=self.physical_cores)
        if not plan.tunable:
            print("AutoScout: nothing to tune (" + "; ".join(f"{k}: {v}" for k, v in
                  {**plan.pinned, **plan.ignored}.items()) + "); the real run uses your settings", file=sys.stderr)
            return None
        space = self.space = self._space(plan)
        self._baseline = self._baseline_config(space, plan)
        workload = JobWorkload(job=job, global_batch=plan.space_global_batch())
        if self._described:  # the model inside the script: the cost model can screen the space
            workload = replace(JobWorkload.from_json(self._described), job=job,
                               global_batch=plan.space_global_batch())
        store = SQLiteStore(self.store)
        progress = Progress(opts.max_trials, enabled=opts.progress)
        try:
            tuner = Tuner(space, self._profile, opts.tune_options(store=self.store), workload=workload,
                          hardware=self.hardware, baseline=self._baseline, on_trial=progress.trial, store=store,
                          efficiency=None if self.gpu else measured_efficiency(self.hardware))
            result = tuner.run()
        finally:
            store.close()
            progress.close()
        result.pinned = dict(plan.pinned)
        self.result = result
        return self._conclude(plan, result)

    @staticmethod
    def _baseline_config(space: Space, plan: Plan) -> Config | None:
        """Your own settings as a config of the space; None (with a note) where they break its
        constraints, e.g. more threads than cores: then the search runs without that reference."""
        try:
            config = space.canonical({k: v for k, v in plan.current.items() if k in space})
            problems = space.violations(config)
        except SpaceError as exc:
            problems = [str(exc)]
        if not problems:
            return config
        print(f"AutoScout: your own settings are outside the space ({problems[0]}); the search runs without"
              " them as its baseline", file=sys.stderr)
        return None

    def _check_steps(self, first: TrialOutcome, stepped: bool) -> None:
        """Refuse to tune a script that never marks a step: every trial would fail the same way."""
        if stepped:
            return
        if first.status == "timeout":
            ran = f"for {self.options.trial_timeout_s:g} s"
            hint = " (if its first step takes longer than that, raise --autoscout-timeout)"
        elif (first.error or "").startswith(NO_STEP_ERROR):
            ran, hint = "to its end", ""
        else:
            return
        raise LaunchError(f"{self.request.script} ran {ran} in its first trial without calling autoscout_plugin.step():"
                          " mark each optimizer step with autoscout_plugin.step() (import autoscout_plugin), or run"
                          f" it without --autoscout{hint}")

    def _space(self, plan: Plan) -> Space:
        include = [k for k in plan.tunable if k != "strategy" or len(plan.strategies) > 1]
        current = {k: v for k, v in plan.current.items() if k in include or k in plan.in_space_pins}
        workload = {"global_batch": plan.space_global_batch()} if plan.space_global_batch() else {}
        hardware = self.hardware.to_json()
        procs = int(plan.current["num_processes"])
        if not self.gpu and "num_processes" not in include and procs > 1:
            hardware["cores"] = max(hardware["cores"] // procs, 1)  # threads x fixed processes <= cores
        try:
            return build_space(workload, hardware, include=include, pin=plan.in_space_pins,
                               strategies=plan.strategies, current=current)
        except SpaceError as exc:
            raise LaunchError(f"AutoScout cannot build the knob space for this launch: {exc}") from exc

    def _conclude(self, plan: Plan, result: TuneResult) -> Config | None:
        config = None
        if result.best_config is not None:
            config = {**result.best_config, **result.derived}
        else:
            warnings.warn("AutoScout: every trial failed; the real run uses your own settings. See each trial's"
                          " error above (or in the report).", RuntimeWarning, stacklevel=2)
        self.report = {"pinned": plan.pinned, "tuned": list(plan.tunable), "declared": plan.declared,
                       "ignored": plan.ignored, "reused": result.reused, "trials": result.n_trials,
                       "tuning_s": round(result.tuning_s, 2), "speedup": result.speedup, "applied": config,
                       "global_batch": plan.global_batch}
        if result.reused:
            print("AutoScout: reused the stored winner for this command and machine (0 trials).", file=sys.stderr)
        lines = ["AutoScout", result.table()]
        if plan.pinned:
            lines.append("pinned: " + ", ".join(f"{k} ({v})" for k, v in plan.pinned.items()))
        lines.append("tuned: " + ", ".join(plan.tunable))
        if plan.ignored:
            lines.append("not tuned: " + ", ".join(f"{k} ({v})" for k, v in plan.ignored.items()))
        lines.append("applied: " + (format_config(config) if config else "nothing (your own settings)"))
        print("\n".join(lines), file=sys.stderr, flush=True)
        if self.options.report:
            json_path, html_path = write_report(result, self.options.report, notes=self.report)
            self.report["report_files"] = [str(json_path), str(html_path)]
        return config

    # ------------------------------------------------------------ trials
    def _profile(self, config: Config, fidelity: Fidelity) -> TrialOutcome:
        if fidelity == Fidelity.F2 and self._first is not None and config == self._baseline:
            outcome, self._first = self._first, None  # trial 0 measured exactly this: not run twice
        else:
            outcome = self._unrunnable(config) or self._trial(config, fidelity)[0]
        if outcome.status == "ok" and outcome.value and fidelity == Fidelity.F2:
            self._best = max(self._best or 0.0, outcome.value)
        return outcome

    def _unrunnable(self, config: Config) -> TrialOutcome | None:
        """Why `config` cannot run as the script is written (None when it can): keeping the global
        batch needs gradient accumulation the script does not read."""
        accum = self.space.derived(config).get("grad_accum", 1) if self.space is not None else 1
        if accum != 1 and self.plan is not None and "grad_accum" not in self.plan.declared:
            return TrialOutcome(status="invalid", cost_s=0.0, error=(
                f"micro_batch_size={config.get('micro_batch_size')} needs grad_accum={accum} to keep the global"
                " batch, and the script reads no knob('grad_accum')"))
        return None

    def _trial(self, config: Config, fidelity: Fidelity) -> tuple[TrialOutcome, dict[str, Any], bool]:
        """Run `config` as one trial: its outcome, the knobs the script declared, and whether it
        marked a step at all."""
        opts = self.options
        measure = opts.measure_steps  # a confirmation repeats the trial, paired, instead of lengthening it
        floor = None
        if fidelity == Fidelity.F2 and opts.cut_below and self._best:
            floor = opts.cut_below * self._best
        derived = self.space.derived(config) if self.space is not None else {}
        spec = {"mode": "trial", "config": {**config, **derived}, "warmup": opts.warmup_steps, "measure": measure,
                "floor": floor, "global_batch": self.plan.global_batch if self.plan else None}
        command, extra = launch_command(self.request, config, gpu=self.gpu, port=_free_port())
        with tempfile.TemporaryDirectory(prefix="autoscout-launch-") as tmp:
            declared_path = Path(tmp) / "declared.json"
            env = {**_clean_env(), **extra, LAUNCH_ENV: json.dumps(spec), DECLARED_ENV: str(declared_path)}
            outcome = run_subprocess_trial(command, timeout_s=opts.trial_timeout_s, env=env)
            try:
                declared = json.loads(declared_path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                declared = {}
            stepped = stepped_marker(declared_path).exists()
            try:
                self._described = self._described or json.loads(
                    workload_file(declared_path).read_text(encoding="utf-8"))
            except (OSError, ValueError):
                pass
        if outcome.status == "error" and (outcome.error or "").startswith("exit code 0;"):
            outcome.error = f"{NO_STEP_ERROR}: mark each optimizer step with autoscout_plugin.step()"
        return outcome, declared, stepped


def main(argv: Sequence[str] | None = None) -> int:
    """`autoscout launch ...`: the exit code of the real run (2 for a command that cannot go ahead)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        hardware, physical = machine()
        request = parse(argv, gpu=hardware.kind == "gpu")
        return AutoScoutLauncher(request, hardware, physical).run()
    except LaunchError as exc:
        print(f"autoscout launch: error: {exc}", file=sys.stderr)
        return 2


__all__ = ["AutoScoutLauncher", "JobWorkload", "LaunchError", "main", "plain_command"]
