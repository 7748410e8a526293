"""The `--autoscout` launcher: replace `accelerate launch` with `autoscout launch --autoscout`.

    autoscout launch --autoscout [--autoscout-trials 8] [accelerate launch args] train.py [script args]

Without `--autoscout` the command is `accelerate launch` itself. With it, the launcher first runs short
trials of the script, each a real `accelerate launch` of it with a timeout, under a supervisor that ends
its whole process tree on a timeout, a stop signal or the launcher's death:
- launcher knobs become `accelerate launch` flags: `num_processes` and `strategy` (`--num_processes`;
  several CPU processes run as `ACCELERATE_USE_CPU=1 ... --multi_gpu`, a `--cpu` of yours dropped, since
  `--cpu --num_processes 2` starts one process), `precision` (`--mixed_precision`), `compile`
  (`--dynamo_backend inductor`), `num_threads` (`--num_cpu_threads_per_process`), and on GPUs the FSDP2
  options (`--use_fsdp --fsdp_version 2`, `--fsdp_reshard_after_forward`, `--fsdp_offload_params`);
- script knobs reach the script through `AUTOSCOUT_LAUNCH`: it reads them with
  `autoscout_plugin.knob(name, default)` and marks each optimizer step with `autoscout_plugin.step()`,
  which times the trial and ends it. The first trial runs your own settings and records which knobs the
  script reads; its measurement is the search's baseline.

On several machines (`--num_machines N --machine_rank R --main_process_ip HOST --main_process_port PORT`,
the same command on each, as with `accelerate launch`, or under `srun`), machine rank 0 searches and
every machine runs each trial in lockstep, then the same winner (`_nodes.py`): `num_processes` is then
per machine, the machine count is the allocation's.

A launcher knob given on the command line (`--num_processes 2`, `--num-processes=2`, ...) is pinned,
not tuned. Every other argument reaches every trial and the real run as written. The search is the
core `Tuner`, with its store: the same command on the same machine later reuses the stored winner
with zero trials. Then the real run starts with the winner (`AUTOSCOUT_LAUNCH` mode `apply`) and its
exit code is the command's. A trial that crashes, hangs or reports a NaN loss is recorded and
survived; when every trial fails the real run goes ahead with your own settings.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import sys
import tempfile
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from autoscout_plugin.costmodel import Hardware, Workload
from autoscout_plugin.loop import DECLARED_ENV, LAUNCH_ENV, NO_STEP_ERROR, stepped_marker, workload_file
from autoscout_plugin.options import default_store
from autoscout_plugin.outputs import prepare_outputs
from autoscout_plugin.parallel import PORT, TrialJob
from autoscout_plugin.profiling import (
    Stopped,
    TrialOutcome,
    free_port,
    run_subprocess_trial,
    run_supervised,
    stop_signals,
)
from autoscout_plugin.report.result import TuneResult
from autoscout_plugin.space import Config
from autoscout_plugin.store import StoreError, describe_store, open_store
from autoscout_plugin.trial import Fidelity
from autoscout_plugin.tuning import RunDescription, TrialRequest, Tuning

from ._accelerate_args import LaunchError, LaunchPlan, LaunchRequest, launch_command, make_plan, parse
from ._nodes import NodeError, Nodes

REAL_RUN_GRACE_S = 10.0
"""How long the real run gets to shut down (save a checkpoint) after a stop signal, before SIGKILL: less than
the 30 s schedulers usually wait before their own SIGKILL, so the launcher still finishes its cleanup."""


@dataclass(frozen=True, slots=True, kw_only=True)
class JobWorkload(Workload):
    """A workload the launcher cannot look into, named by its job (the script, its content and
    arguments, the launch options), so two jobs never share a stored winner."""

    job: str = ""


def launch_machine() -> tuple[Hardware, int]:
    """This machine (its GPUs when torch sees any) and its physical core count."""
    import psutil
    import torch

    from ._torch import machine as machine_of

    hardware = machine_of("cuda" if torch.cuda.is_available() else "cpu")
    return hardware, psutil.cpu_count(logical=False) or hardware.cores


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


NOTE_PREFIX = "launch:"
"""What a launched job's script declared is kept in the store as the note `launch:<job>` (AutoScout before
shared history kept it in `<store>.launch.json`, under job ids that included the script's folder: such a job
runs its trial 0 again once)."""


def load_declared(store: str, job: str, what: str = "declared") -> dict[str, Any] | None:
    """The knobs a job's script declared in an earlier run on this store (`what="workload"`: the model it
    described), or None."""
    try:
        with open_store(store) as opened:
            entry = opened.note(NOTE_PREFIX + job)
    except StoreError:
        return None  # the run measures its trial 0 again
    return dict(entry[what]) if isinstance(entry, dict) and isinstance(entry.get(what), dict) else None


def save_declared(store: str, job: str, declared: dict[str, Any], script: str,
                  workload: dict[str, Any] | None = None) -> None:
    """Remember what the job's script declared, and the model it described, in the store (every machine
    that shares the store sees it)."""
    try:
        with open_store(store) as opened:
            opened.set_note(NOTE_PREFIX + job, {"script": script, "declared": declared, "workload": workload})
    except StoreError as exc:  # only costs the next run its trial 0
        warnings.warn(f"AutoScout: could not save what {script} declared to {describe_store(store)}: {exc}; the"
                      " next run of this command runs its trial 0 again", RuntimeWarning, stacklevel=2)


# ---------------------------------------------------------------- the launcher


class AutoScoutLauncher:
    """Tunes one launch, then runs it with the winner.

    Args:
        request: the parsed command line (`_accelerate_args.parse`).
        hardware: this machine; detected when None (`launch_machine()`).
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
            hardware, physical_cores = launch_machine()
        self.hardware = hardware
        self.physical_cores = physical_cores or hardware.cores
        self.gpu = hardware.kind == "gpu"
        self.store = self.options.store or default_store()
        self.plan: LaunchPlan | None = None
        self.tuning: Tuning | None = None
        self.result: TuneResult | None = None
        self.report: dict[str, Any] = {}
        self._first: TrialOutcome | None = None
        self._described: dict[str, Any] | None = None
        """The model the script described with `autoscout_plugin.describe()` in a trial."""
        self.nodes: Nodes | None = None
        """The machines of a multi-node launch (None on one machine)."""
        self._trials = 0

    # ------------------------------------------------------------ entry points
    def run(self) -> int:
        """Tune (or reuse), then run the real job; its exit code.

        SIGTERM and SIGHUP (a scheduler's stop, `timeout`, a closed terminal) end it the way Ctrl-C does:
        the running trial's or real run's processes are stopped and its temp files removed, the finished
        trials stay in the store for the next run to resume from; the exit code is then 128 + the signal.
        """
        with stop_signals():
            try:
                if not self.request.autoscout:
                    return self.run_plain()
                if self.request.machines > 1:
                    return self.run_nodes()
                config = self.decide()
                started = time.perf_counter()
                code = self.run_real(config)
                if code == 0 and self.tuning is not None and self.result is not None \
                        and not self.result.net.get("skipped"):
                    self.tuning.finish(time.perf_counter() - started, self.options.planned_steps)
                return code
            except Stopped as stop:
                print(f"AutoScout: stopped by {signal.Signals(stop.signum).name}", file=sys.stderr, flush=True)
                return 128 + stop.signum

    def run_nodes(self) -> int:
        """One machine of a multi-node launch: rank 0 decides, running every trial on all machines; the
        others run the trials it posts; then every machine starts the real run with the same config.
        A machine that cannot join, or one lost on the way, ends the launch here with exit code 1 and a
        message that names it."""
        ns = self.request.namespace
        rank = int(ns.machine_rank or 0)
        try:
            nodes = self.nodes = Nodes(ns.main_process_ip, int(ns.main_process_port), self.request.machines, rank,
                                       job=self.request.job_id(), join_timeout_s=self.request.join_timeout_s)
            print(f"AutoScout: machine rank {rank} of {self.request.machines} joined: "
                  + ", ".join(str(n) for _, n in sorted(nodes.nodes.items())), file=sys.stderr, flush=True)
            if rank == 0:
                try:
                    config = self.decide()
                except BaseException as exc:
                    with contextlib.suppress(Exception):
                        nodes.finish({"error": f"{type(exc).__name__}: {exc}"[:500]}, wait_s=5.0, strict=False)
                    raise
                batch = self.plan.global_batch if self.plan else None
                nodes.finish({"config": config, "global_batch": batch})
            else:
                end = nodes.follow(self._follow)
                nodes.close()
                if end.get("error"):
                    raise NodeError(f"machine rank 0 failed while tuning: {end['error']}")
                config, batch = end.get("config"), end.get("global_batch")
        except NodeError as exc:
            if self.nodes is not None:
                self.nodes.close()
            print(f"autoscout launch: error: {exc}", file=sys.stderr, flush=True)
            return 1
        return self.run_real(config, batch)

    def run_plain(self) -> int:
        """`accelerate launch` as given; see `run_real` for how it is supervised."""
        return run_supervised(plain_command(self.request), env=_clean_env(), grace_s=REAL_RUN_GRACE_S)

    def run_real(self, config: Config | None, global_batch: int | None = None) -> int:
        """The real run: with `config` (plus derived values) through `AUTOSCOUT_LAUNCH`; with None, your
        own settings (as in the trials: several CPU processes still run as `--multi_gpu`).

        It runs under the trials' supervisor, so it does not outlive the launcher: a stop signal the
        launcher gets is passed on to the whole run (SIGKILL after `REAL_RUN_GRACE_S`), and the launcher's
        death, even by SIGKILL, ends it too."""
        command, extra = launch_command(self.request, config or {}, gpu=self.gpu)
        env = {**_clean_env(), **extra}
        if config is not None:
            batch = self.plan.global_batch if self.plan else global_batch
            env[LAUNCH_ENV] = json.dumps({"mode": "apply", "config": config, "warmup": 0, "measure": 0,
                                          "cut_off": None, "global_batch": batch})
        shown = " ".join(shlex.quote(a) for a in command[3:])
        print(f"AutoScout: real run: accelerate launch {shown}", file=sys.stderr, flush=True)
        return run_supervised(command, env=env, grace_s=REAL_RUN_GRACE_S)

    # ------------------------------------------------------------ deciding
    def decide(self) -> Config | None:
        """The config for the real run (with `grad_accum` when derived), or None for your own settings."""
        outputs = prepare_outputs(self.store, self.options.report)  # before trial 0: warns and falls back
        self.store = outputs.store
        self.options = replace(self.options, store=outputs.store, report=outputs.report)
        request, opts = self.request, self.options
        short = opts.too_short(opts.planned_steps)  # before trial 0: a run too short to win anything back
        if short is not None:
            print(f"AutoScout: {short}; the real run uses your settings untouched.", file=sys.stderr, flush=True)
            return None
        job = request.job_id()
        declared = load_declared(self.store, job)
        if declared is None:
            print("AutoScout: trial 0 runs your own settings and records the knobs the script reads",
                  file=sys.stderr, flush=True)
            self._first, declared, stepped = self._trial(TrialRequest(
                config={}, fidelity=Fidelity.F2, warmup=opts.warmup_steps, measure=opts.measure_steps, cut_off=None,
                timeout_s=opts.trial_timeout_s, split=None, max_measure=opts.most_measure_steps,
                precision=opts.measure_precision))
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
        tuning = self.tuning = self._tuning(plan, job)
        result = self.result = tuning.run(self._profile, job=self._job)
        config = {**result.best_config, **result.derived} if result.best_config is not None else None
        self.report = tuning.conclude(result, applied=config, declared=plan.declared)
        return config

    def _tuning(self, plan: LaunchPlan, job: str) -> Tuning:
        """The tuning flow of this launch: its space, the user's settings as its baseline."""
        workload: Workload = JobWorkload(job=job)
        if self._described:  # the model inside the script: the cost model can screen the space
            workload = replace(JobWorkload.from_json(self._described), job=job, global_batch=None)  # type: ignore[call-arg]
        try:
            return Tuning(self.options, RunDescription(
                current=plan.current, knobs=plan.tunable, hardware=self.hardware, workload=workload,
                pinned=plan.pinned, fixed=plan.in_space_pins, split=plan.split(), strategies=plan.strategies,
                subject="this command", main_run="the real run", ignored=plan.ignored, runs_jobs=True,
                progress_unavailable="each trial is a run of the script, which AutoScout cannot resume mid-run"))
        except ValueError as exc:
            raise LaunchError(str(exc)) from exc

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

    # ------------------------------------------------------------ trials
    def _profile(self, request: TrialRequest) -> TrialOutcome:
        assert self.tuning is not None
        if request.fidelity == Fidelity.F2 and self._first is not None and request.config == self.tuning.baseline:
            outcome, self._first = self._first, None  # trial 0 measured exactly this: not run twice
            return outcome
        return self._unrunnable(request) or self._trial(request)[0]

    def _job(self, request: TrialRequest) -> TrialJob | TrialOutcome:
        """The trial as a job for an executor (parallel trials, on this machine or others): the same
        `accelerate launch` with the same child protocol, its rendezvous port picked where it runs."""
        # Trial 0 ran here; the others run where the executor puts them (other nodes, other load): your own
        # settings are measured there too, so that the search compares speeds measured alike.
        self._first = None
        unrunnable = self._unrunnable(request)
        if unrunnable is not None:
            return unrunnable
        command, extra = launch_command(self.request, request.config, gpu=self.gpu, port=PORT)
        processes = int(request.config.get("num_processes", self.plan.current.get("num_processes", 1) if self.plan
                                           else 1))
        threads = int(request.config.get("num_threads", 1))
        return TrialJob(command=tuple(command), env={**extra, LAUNCH_ENV: json.dumps(request.spec())},
                        timeout_s=request.timeout_s, cpus=max(1, processes * threads),
                        gpus=processes if self.gpu else 0, label=json.dumps(request.config, sort_keys=True))

    def _unrunnable(self, request: TrialRequest) -> TrialOutcome | None:
        """Why the request cannot run as the script is written (None when it can): keeping the global
        batch needs gradient accumulation the script does not read."""
        accum = request.split.grad_accum if request.split is not None else 1
        if accum != 1 and self.plan is not None and "grad_accum" not in self.plan.declared:
            return TrialOutcome(status="invalid", cost_s=0.0, error=(
                f"micro_batch_size={request.config.get('micro_batch_size')} needs grad_accum={accum} to keep the"
                " global batch, and the script reads no knob('grad_accum')"))
        return None

    def _trial(self, request: TrialRequest) -> tuple[TrialOutcome, dict[str, Any], bool]:
        """Run one trial: its outcome, the knobs the script declared, and whether it marked a step at all.
        On several machines every machine runs it (`Nodes.lead_trial`); its speed is the slowest's."""
        payload = {"config": request.config, "spec": request.spec(), "timeout_s": request.timeout_s,
                   "port": free_port(), "rdzv_id": f"autoscout-{self.request.job_id()[:12]}-{self._trials}"}
        self._trials += 1
        found: dict[str, Any] = {}
        if self.nodes is None:
            outcome = self._run_trial(payload, None, found)
        else:
            outcome = self.nodes.lead_trial(self._trials - 1, payload,
                                            lambda watch: self._run_trial(payload, watch, found))
        return outcome, found.get("declared", {}), bool(found.get("stepped"))

    def _follow(self, payload: dict[str, Any], watch: Any) -> TrialOutcome:
        """A machine above rank 0: its part of a trial rank 0 posted."""
        return self._run_trial(payload, watch, {})

    def _run_trial(self, payload: dict[str, Any], watch: Any, found: dict[str, Any]) -> TrialOutcome:
        """This machine's part of a trial; `found` gets what the script declared (rank 0 writes it)."""
        spec = payload["spec"]
        command, extra = launch_command(self.request, payload["config"], gpu=self.gpu, port=payload["port"])
        if self.request.machines > 1:
            extra["PET_RDZV_ID"] = payload["rdzv_id"]  # torchrun's --rdzv_id: each trial its own rendezvous
        # The trial's supervisor removes the folder if the launcher is stopped or killed meanwhile.
        with tempfile.TemporaryDirectory(prefix="autoscout-launch-", ignore_cleanup_errors=True) as tmp:
            declared_path = Path(tmp) / "declared.json"
            env = {**_clean_env(), **extra, LAUNCH_ENV: json.dumps(spec), DECLARED_ENV: str(declared_path)}
            outcome = run_subprocess_trial(command, timeout_s=payload["timeout_s"], env=env, cleanup=[tmp],
                                           watch=watch)
            try:
                declared = json.loads(declared_path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                declared = {}
            found.update(declared=declared, stepped=stepped_marker(declared_path).exists())
            try:
                self._described = self._described or json.loads(
                    workload_file(declared_path).read_text(encoding="utf-8"))
            except (OSError, ValueError):
                pass
        if outcome.status == "error" and (outcome.error or "").startswith("exit code 0;"):
            outcome.error = f"{NO_STEP_ERROR}: mark each optimizer step with autoscout_plugin.step()"
        return outcome


def main(argv: Sequence[str] | None = None) -> int:
    """`autoscout launch ...`: the exit code of the real run (2 for a command that cannot go ahead)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        hardware, physical = launch_machine()
        request = parse(argv, gpu=hardware.kind == "gpu")
        return AutoScoutLauncher(request, hardware, physical).run()
    except LaunchError as exc:
        print(f"autoscout launch: error: {exc}", file=sys.stderr)
        return 2


__all__ = ["AutoScoutLauncher", "JobWorkload", "LaunchError", "main", "plain_command"]
