"""The `autoscout launch` command line as data: parsing it (accelerate's parser plus ours), what the
user pinned, the user's own configuration, the plan of what to tune, and the `accelerate launch`
command of a config. Pure functions: nothing here starts a process.

`accelerate launch` options are parsed by `accelerate.commands.launch.launch_command_parser()`, so a
typo is reported the way accelerate reports it, and the user's tokens are passed on as written: a
trial adds flags only for the knobs it tunes, which are never ones the user gave.

With `--autoscout`, AutoScout's options and the accelerate options a tuned launch relies on
(`--num_processes` 1 to 1024, `--num_machines` 1 to 1024, `--machine_rank` below it, `--num_cpu_threads_per_process`
>= 1, `--main_process_port` 1 to 65535) are checked with `autoscout_plugin.validate` before anything starts: a bad
value is a `LaunchError` naming the option, the value and what to give instead.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from accelerate.commands.launch import launch_command_parser

from autoscout_plugin import validate
from autoscout_plugin.batch import BatchSplit
from autoscout_plugin.options import AutoScoutOptions
from autoscout_plugin.redact import redact
from autoscout_plugin.space.catalogue import CATALOGUE, DDP_KWARGS

LAUNCHER_KNOBS = ("strategy", "num_processes", "precision", "compile", "num_threads",
                  "fsdp_reshard_after_forward", "cpu_offload")
"""Knobs set through `accelerate launch` flags."""
GPU_ONLY = ("fsdp_reshard_after_forward", "cpu_offload")
"""FSDP options: tuned only where a GPU exists (FSDP through accelerate needs one)."""
_TYPE = {"int": int, "float": float, "bool": bool, "categorical": str}
SCRIPT_KNOBS = {name: _TYPE[CATALOGUE[name].kind] for name in (
    "micro_batch_size", "num_workers", "pin_memory", "activation_checkpointing", *DDP_KWARGS, "ddp_comm_hook")}
"""Knobs a script reads with `autoscout_plugin.knob()` (every DDP knob of the catalogue among them), and
the type of their value."""

_PRECISION = {"no": "32-true", "bf16": "bf16-mixed", "fp16": "16-mixed"}
_MIXED = {v: k for k, v in _PRECISION.items()}
_OURS: dict[str, dict[str, Any]] = {
    "autoscout": {"action": "store_true", "help": "tune the launch and the script's knobs before the real run"},
    "trials": {"type": int, "help": "profiling runs, your own settings included (default 8; up to 24 with"
                                    " --autoscout-steps, while each next trial pays for itself)"},
    "seconds": {"type": float, "help": "profiling seconds at most (a positive, finite number)"},
    "include": {"help": "comma-separated knobs to tune (default: every knob that applies)"},
    "report": {"help": "write the result to PATH.json and PATH.html"},
    "store": {"help": "trial store: an SQLite file or a postgresql://user@host:port/db URL shared by many machines"
                       " (default: $AUTOSCOUT_STORE or ~/.cache/autoscout/trials.sqlite)"},
    "timeout": {"type": float, "default": 600.0,
                "help": "seconds before a trial is stopped (default 600; at most 604800, a week)"},
    "warmup": {"type": int, "default": 2, "help": "optimizer steps before timing (default 2)"},
    "measure": {"type": int, "default": 4, "help": "optimizer steps timed per trial, at least (default 4; a"
                                                   " single-process search trial goes on, up to 3x, until its"
                                                   " speed is known to +-5%%)"},
    "confirm": {"type": int, "default": 1, "help": "best configs re-measured before choosing (default 1; 0 skips)"},
    "parallel": {"type": int, "default": 1, "help": "search trials run at once (default 1), by --autoscout-executor"},
    "executor": {"help": "where parallel trials run: local (default), ray[:ADDRESS] (a Ray cluster, via Ray Tune) or"
                         " slurm[:OPTIONS] (Slurm jobs via submitit, e.g. slurm:partition=gpu,time=30)"},
    "steps": {"type": int, "help": "optimizer steps of the real run: tuning stops once the next trial would not pay"
                                   " for itself in it, and a run too short to win back any tuning starts untouched"},
    "no_net_gain": {"action": "store_true", "help": "spend the whole trial budget whatever the real run's length"},
    "join_timeout": {"type": float, "help": "with --num_machines N > 1: seconds every node has to join machine rank 0"
                                            " (default 300)"},
}


class LaunchError(ValueError):
    """A launch that cannot go ahead as given; the message says what to change."""


def _flags(name: str) -> list[str]:
    """Both spellings of an option of ours (accelerate's actions add the `-` one to the `_` one)."""
    return ["--autoscout"] if name == "autoscout" else [f"--autoscout-{name.replace('_', '-')}", f"--autoscout_{name}"]


def make_parser() -> argparse.ArgumentParser:
    """accelerate's launch parser with AutoScout's options added."""
    parser = launch_command_parser()
    parser.prog = "autoscout launch"
    group = parser.add_argument_group("AutoScout", "tune the launch first: replace `accelerate launch` with "
                                                   "`autoscout launch --autoscout`")
    for name, kwargs in _OURS.items():
        group.add_argument(_flags(name)[-1], dest=f"autoscout_{name}" if name != "autoscout" else "autoscout", **kwargs)
    return parser


@dataclass(frozen=True, kw_only=True)
class LaunchRequest:
    """One `autoscout launch` command line, parsed and checked."""

    accelerate_args: tuple[str, ...]
    """The user's `accelerate launch` options, as written, AutoScout's own removed."""
    script: str
    script_args: tuple[str, ...]
    namespace: argparse.Namespace
    """accelerate's reading of the command line (explicit values; defaults where not given)."""
    given: frozenset[str]
    """accelerate options (dest names) the user passed explicitly, in either spelling."""
    autoscout: bool = False
    options: AutoScoutOptions = field(default_factory=AutoScoutOptions)
    include: tuple[str, ...] | None = None
    config_pins: dict[str, str] = field(default_factory=dict)
    """Launcher knobs that accelerate's config file sets away from accelerate's defaults -> why pinned."""
    config_file: str | None = None
    """The accelerate config file this launch reads (`--config_file`, or accelerate's default one)."""
    join_timeout_s: float = 300.0
    """With several machines: how long every node has to join machine rank 0."""

    @property
    def machines(self) -> int:
        """`--num_machines` (1 when not given)."""
        return int(self.namespace.num_machines or 1)

    def job_id(self) -> str:
        """The identity of this job: the script (its file name and content, not where it lies, so that machines
        sharing a store with the project in other folders share the job), its arguments, the launch options."""
        path = Path(self.script)
        content = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else ""
        config = Path(self.config_file) if self.config_file else None
        # The same on every node of a multi-node launch: the machine's own rank is not part of the job.
        launch = tuple(drop_option(list(self.accelerate_args), "machine_rank"))
        text = json.dumps({"script": path.name if path.is_file() else self.script, "content": content,
                           "script_args": self.script_args, "accelerate_args": launch,
                           "config_file": config.read_text(encoding="utf-8") if config and config.is_file() else ""})
        return hashlib.sha256(text.encode()).hexdigest()[:24]


def parse(argv: Sequence[str], *, gpu: bool = False) -> LaunchRequest:
    """Read and check a command line; argparse exits (code 2) on what accelerate itself would refuse.

    Raises:
        LaunchError: an AutoScout option is wrong, the script is missing, or the launch cannot be tuned.
    """
    argv = list(argv)
    ns = make_parser().parse_args(argv)
    script_at = len(argv) - len(ns.training_script_args) - 1
    if script_at < 0 or argv[script_at] != ns.training_script:
        script_at = argv.index(ns.training_script)
    ours, accelerate_args = _split(argv[:script_at])
    # accelerate's actions record what was given; the script and AutoScout's options are not launch options
    given = frozenset(d for d in getattr(ns, "nondefault", ()) if not d.startswith(("training_script", "autoscout")))
    if not ns.autoscout:
        if ours:
            raise LaunchError(f"{ours[0]} has no effect without --autoscout; add --autoscout or drop it")
        return LaunchRequest(accelerate_args=tuple(accelerate_args), script=ns.training_script,
                             script_args=tuple(ns.training_script_args), namespace=ns, given=given)
    if not (ns.module or ns.no_python) and not Path(ns.training_script).is_file():
        raise LaunchError(f"script {ns.training_script!r} not found (from {os.getcwd()}); give the path of the"
                          " training script after the launch options")
    _check_launch(ns)
    config_file, config_pins = apply_config_file(ns, given)
    _check_machines(ns, given)
    include = _include(ns.autoscout_include, pins={**config_pins, **pinned(ns, given)}, gpu=gpu)
    options = _options(ns)
    join = ns.autoscout_join_timeout
    if join is not None:
        _check("--autoscout-join-timeout", join, "a positive number of seconds", validate.positive_number,
               high=validate.MAX_TIMEOUT_S)
        if (ns.num_machines or 1) == 1:
            raise LaunchError("--autoscout-join-timeout has no effect on one machine; drop it, or give --num_machines")
    return LaunchRequest(accelerate_args=tuple(accelerate_args), script=ns.training_script,
                         script_args=tuple(ns.training_script_args), namespace=ns, given=given, autoscout=True,
                         options=options, include=include, config_pins=config_pins, config_file=config_file,
                         join_timeout_s=300.0 if join is None else float(join))


def _split(tokens: list[str]) -> tuple[list[str], list[str]]:
    """(AutoScout's tokens, the rest) of the options before the script; accelerate allows no
    abbreviations, so ours are the exact spellings."""
    takes_value = {flag: _OURS[name].get("action") != "store_true" for name in _OURS for flag in _flags(name)}
    ours, rest = [], []
    skip = False
    for token in tokens:
        if skip:
            ours.append(token)
            skip = False
            continue
        name = token.split("=", 1)[0]
        if name in takes_value:
            ours.append(token)
            skip = takes_value[name] and "=" not in token
        else:
            rest.append(token)
    return ours, rest


MAX_PROCESSES = 1024
"""`--num_processes` under `--autoscout` is at most 1024 processes on this machine."""


def _check(flag: str, value: Any, what: str, check: Any, **kwargs: Any) -> None:
    """`check(value, **kwargs)` from `autoscout_plugin.validate`, its refusal as a `LaunchError`:
    `--autoscout-seconds inf: give a positive, finite number of seconds, or leave it out`."""
    try:
        check(None, value, **kwargs)
    except ValueError as exc:
        shown = repr(redact(value)) if isinstance(value, str) else value  # a store URL may hold a password
        why = str(exc).split(": ", 1)[1] if check in (validate.store, validate.executor) and ": " in str(exc) else ""
        raise LaunchError(f"{flag} {shown}: give {what}" + (f" ({why})" if why else "")) from None


def _check_launch(ns: argparse.Namespace) -> None:
    """accelerate's numeric options that a tuned launch relies on (accelerate itself checks only their type)."""
    checks = [("--num_processes", ns.num_processes, f"1 to {MAX_PROCESSES} processes", 1, MAX_PROCESSES),
              ("--num_machines", ns.num_machines, f"1 to {MAX_PROCESSES} machines", 1, MAX_PROCESSES),
              ("--num_cpu_threads_per_process", ns.num_cpu_threads_per_process, "1 or more threads per process",
               1, None),
              ("--main_process_port", ns.main_process_port, "a port from 1 to 65535", 1, 65535)]
    machines = ns.num_machines or 1
    checks.append(("--machine_rank", ns.machine_rank, f"0 to {machines - 1} (the machine's rank among --num_machines"
                                                     f" {machines})", 0, machines - 1))
    for flag, value, what, low, high in checks:
        if value is not None:
            _check(flag, value, what, validate.integer, low=low, high=high)


def _check_machines(ns: argparse.Namespace, given: frozenset[str]) -> None:
    """A multi-node launch under --autoscout: every node runs this command with its own --machine_rank; they
    meet at machine rank 0 (--main_process_ip, --main_process_port), each node runs an equal share of the
    processes, and the trials run on all nodes in lockstep (never parallel trials)."""
    machines = ns.num_machines or 1
    if machines == 1:
        return
    if "machine_rank" not in given:
        raise LaunchError(f"--num_machines {machines}: give each machine its --machine_rank (0 on the main one, 1 to"
                          f" {machines - 1} on the others), as with accelerate launch")
    for flag in ("main_process_ip", "main_process_port"):
        if flag not in given:
            raise LaunchError(f"--num_machines {machines}: give --{flag} (where machine rank 0 listens), the same on"
                              " every machine; AutoScout's nodes meet there before the real run")
    if ns.main_process_port == 0:
        raise LaunchError("--main_process_port 0: a multi-node launch needs a fixed port, the same on every machine")
    if ns.num_processes is not None and ns.num_processes % machines:
        raise LaunchError(f"--num_processes {ns.num_processes} is not a multiple of --num_machines {machines}: give"
                          " the total over all machines, an equal share per machine")
    if ns.autoscout_parallel not in (None, 1) or ns.autoscout_executor is not None:
        raise LaunchError(f"--num_machines {machines}: each trial runs on all machines at once, so trials run one at a"
                          " time; drop --autoscout-parallel and --autoscout-executor")


def _options(ns: argparse.Namespace) -> AutoScoutOptions:
    timeout = f"a positive number of seconds per trial, at most {validate.MAX_TIMEOUT_S:g} (a week)"
    checks = [("trials", ns.autoscout_trials, "a positive number of profiling runs", validate.integer, {"low": 1}),
              ("seconds", ns.autoscout_seconds, "a positive, finite number of seconds, or leave it out",
               validate.positive_number, {}),
              ("timeout", ns.autoscout_timeout, timeout, validate.positive_number, {"high": validate.MAX_TIMEOUT_S}),
              ("warmup", ns.autoscout_warmup, "0 or more optimizer steps", validate.integer, {"low": 0}),
              ("measure", ns.autoscout_measure, "1 or more optimizer steps", validate.integer, {"low": 1}),
              ("confirm", ns.autoscout_confirm, "0 or more configs to re-measure", validate.integer, {"low": 0}),
              ("parallel", ns.autoscout_parallel, "1 to 1024 trials at once", validate.integer,
               {"low": 1, "high": 1024}),
              ("executor", ns.autoscout_executor, "local, ray[:ADDRESS] or slurm[:OPTIONS]", validate.executor, {}),
              ("steps", ns.autoscout_steps, "a positive number of optimizer steps", validate.integer, {"low": 1}),
              ("report", ns.autoscout_report, "a file path (PATH.json and PATH.html are written)", validate.path, {}),
              # a folder is not refused: the run goes on with a fresh store and a warning (outputs.py)
              ("store", ns.autoscout_store, "an SQLite file or a postgresql:// URL, or leave it out", validate.store,
               {})]
    for name, value, what, check, kwargs in checks:
        if value is not None:
            _check(f"--autoscout-{name}", value, what, check, **kwargs)
    try:
        trials = "auto" if ns.autoscout_trials is None else ns.autoscout_trials
        return AutoScoutOptions(max_trials=trials, max_seconds=ns.autoscout_seconds, include=None,
                                store=ns.autoscout_store, report=ns.autoscout_report,
                                warmup_steps=ns.autoscout_warmup, measure_steps=ns.autoscout_measure,
                                trial_timeout_s=ns.autoscout_timeout, confirm_top=ns.autoscout_confirm,
                                parallel=ns.autoscout_parallel, executor=ns.autoscout_executor,
                                planned_steps=ns.autoscout_steps, net_gain=not ns.autoscout_no_net_gain)
    except ValueError as exc:  # the options' own rules, worded for the Python API
        raise LaunchError(f"the --autoscout options: {exc}") from None


def _include(text: str | None, *, pins: dict[str, str], gpu: bool) -> tuple[str, ...] | None:
    if text is None:
        return None
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    if not names:
        raise LaunchError(f"--autoscout-include {text!r} names no knob; give knobs such as num_processes,precision")
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise LaunchError(f"--autoscout-include {text!r} lists {twice[0]!r} twice; list each knob once")
    tunable = [*LAUNCHER_KNOBS, *SCRIPT_KNOBS]
    for name in names:
        if name == "grad_accum":
            raise LaunchError("--autoscout-include grad_accum: it follows from the global batch, never tuned; read"
                              " it with knob('grad_accum', ...) and include micro_batch_size")
        if name not in tunable:
            raise LaunchError(f"unknown knob {name!r} in --autoscout-include; the launcher tunes: {', '.join(tunable)}")
        if name in GPU_ONLY and not gpu:
            raise LaunchError(f"--autoscout-include {name}: FSDP options need a GPU and this machine has none;"
                              " drop it")
        if name in pins:
            raise LaunchError(f"knob {name!r} is listed in --autoscout-include but pinned by {pins[name]} on the"
                              " command line; drop one of them")
    return names


# ---------------------------------------------------------------- the user's own settings


def pinned(ns: argparse.Namespace, given: frozenset[str] | set[str]) -> dict[str, str]:
    """Launcher knobs the user set on the command line -> the option that set them."""
    out: dict[str, str] = {}
    for dest in ("use_fsdp", "use_deepspeed", "use_megatron_lm", "tpu"):
        if dest in given:
            out["strategy"] = out["num_processes"] = f"--{dest}"
            out.update({k: f"--{dest}" for k in GPU_ONLY})
    if "num_processes" in given:
        out.setdefault("strategy", f"--num_processes {ns.num_processes}")
        out.setdefault("num_processes", f"--num_processes {ns.num_processes}")
    if "multi_gpu" in given:
        out.setdefault("strategy", "--multi_gpu")
    for knob, dest in (("precision", "mixed_precision"), ("compile", "dynamo_backend"),
                       ("num_threads", "num_cpu_threads_per_process"), ("cpu_offload", "fsdp_offload_params"),
                       ("fsdp_reshard_after_forward", "fsdp_reshard_after_forward")):
        if dest in given:
            out.setdefault(knob, f"--{dest} {getattr(ns, dest)}")
    return out


def apply_config_file(ns: argparse.Namespace, given: frozenset[str] | set[str]) -> tuple[str | None, dict[str, str]]:
    """Read accelerate's config file as `accelerate launch` does (`--config_file`, else its default file
    unless `--cpu`), for the launch options the command line leaves unset. Each launcher knob the file
    sets away from accelerate's default is pinned (the user chose it, as with a flag) and written into
    `ns`, so the user's own config is what the file gives; a knob at its default stays tunable.
    Returns the file (None without one) and `{knob: why pinned}`.

    Raises:
        LaunchError: the file cannot be read.
    """
    from accelerate.commands import config as accelerate_config
    from accelerate.commands.config.config_args import load_config_from_file

    path = ns.config_file
    if path is None and os.path.isfile(accelerate_config.default_config_file) and not ns.cpu:
        path = accelerate_config.default_config_file
    if path is None:
        return None, {}
    try:
        cfg = load_config_from_file(path)
    except Exception as exc:  # noqa: BLE001 - accelerate raises several kinds; the user gets one message
        raise LaunchError(f"cannot read the accelerate config file {path} ({type(exc).__name__}: {exc}); fix it,"
                          " or pass --config_file with another one") from exc
    if str(getattr(cfg, "compute_environment", "")).upper().endswith("SAGEMAKER"):
        return path, {}

    def why(key: str, value: Any) -> str:
        return f"accelerate config file {path} ({key}: {value})"

    pins: dict[str, str] = {}
    precision = str(getattr(cfg.mixed_precision, "value", cfg.mixed_precision) or "no").lower()
    if "mixed_precision" not in given and precision != "no":
        ns.mixed_precision = precision
        pins["precision"] = why("mixed_precision", precision)
    kind = str(getattr(cfg.distributed_type, "value", cfg.distributed_type) or "NO").upper()
    launch_flags = {"multi_gpu", "use_fsdp", "use_deepspeed", "use_megatron_lm", "tpu"}
    if not launch_flags & set(given) and kind not in ("NO", "MULTI_CPU"):
        ns.use_fsdp, ns.use_deepspeed = kind == "FSDP", kind == "DEEPSPEED"
        ns.multi_gpu = kind.startswith("MULTI_")
        pins["strategy"] = pins["num_processes"] = why("distributed_type", kind)
        if kind in ("FSDP", "DEEPSPEED"):
            pins.update({k: why("distributed_type", kind) for k in GPU_ONLY})
    if "num_processes" not in given and cfg.num_processes not in (None, 1, -1):
        ns.num_processes = int(cfg.num_processes)
        pins.setdefault("strategy", why("num_processes", cfg.num_processes))
        pins.setdefault("num_processes", why("num_processes", cfg.num_processes))
    dynamo = dict(getattr(cfg, "dynamo_config", None) or {})
    backend = str(dynamo.get("dynamo_backend", "NO")).lower()
    if "dynamo_backend" not in given and backend != "no":
        ns.dynamo_backend = backend
        if dynamo.get("dynamo_mode") and "dynamo_mode" not in given:
            ns.dynamo_mode = dynamo["dynamo_mode"]
        pins["compile"] = why("dynamo_backend", backend)
    return path, pins


def current_config(ns: argparse.Namespace, *, gpus: int = 0, physical_cores: int = 1,
                   env: dict[str, str] | None = None) -> dict[str, Any]:
    """The launcher knobs as plain `accelerate launch` would run them (its defaults where not given);
    a knob with no catalogue value (fp8, a non-inductor dynamo backend) is left out."""
    env = dict(os.environ if env is None else env)
    machines = ns.num_machines or 1
    if machines > 1:  # per machine: accelerate's --num_processes counts every machine's
        procs = ns.num_processes // machines if ns.num_processes is not None else max(gpus, 1)
    else:
        procs = ns.num_processes if ns.num_processes is not None else max(gpus, 2 if ns.multi_gpu else 1)
    world = procs * machines
    strategy = "single" if world == 1 else "fsdp" if ns.use_fsdp else "deepspeed" if ns.use_deepspeed else "ddp"
    config: dict[str, Any] = {"strategy": strategy, "num_processes": procs}
    if machines > 1:
        config["num_nodes"] = machines
    precision = _PRECISION.get(ns.mixed_precision or "no")
    if precision is not None:
        config["precision"] = precision
    backend = ns.dynamo_backend or "no"
    if backend in ("no", "inductor"):
        config["compile"] = "off" if backend == "no" else (ns.dynamo_mode or "default")
    threads = ns.num_cpu_threads_per_process
    if threads is None:  # accelerate's own rule (`_validate_launch_command`)
        threads = int(env["OMP_NUM_THREADS"]) if env.get("OMP_NUM_THREADS", "").isdigit() else 1
        if ns.cpu and not env.get("OMP_NUM_THREADS") and physical_cores // procs > 1 and machines == 1:
            threads = physical_cores // procs
    config["num_threads"] = max(int(threads), 1)
    return config


# ---------------------------------------------------------------- what to tune


@dataclass(frozen=True, kw_only=True)
class LaunchPlan:
    """What a launch tunes, what is pinned and why, and the user's own config."""

    current: dict[str, Any]
    """The user's config: launcher knobs and the script's declared defaults."""
    tunable: tuple[str, ...]
    pinned: dict[str, str]
    """knob -> why it is not tuned."""
    in_space_pins: dict[str, Any]
    """Knobs held at one value inside the space (so constraints see them)."""
    strategies: tuple[str, ...]
    per_process_batch: int | None
    """micro-batch x accumulation of one process (None: the script declares no micro-batch)."""
    global_batch: int | None
    """Samples per optimizer step across processes."""
    declared: dict[str, Any]
    ignored: dict[str, str] = field(default_factory=dict)
    """Declared names that are not tuned -> why."""

    @property
    def world(self) -> int:
        """Processes over every machine in the user's config."""
        return int(self.current["num_processes"]) * int(self.current.get("num_nodes", 1))

    def split(self) -> BatchSplit | None:
        """The user's batch split (None: the script declares no micro-batch)."""
        if self.per_process_batch is None:
            return None
        micro = int(self.current["micro_batch_size"])
        return BatchSplit(self.per_process_batch * self.world, micro, self.per_process_batch // micro, self.world)


def _valid(name: str, value: Any) -> bool:
    """Whether a script's default for a catalogue knob has the knob's type and range."""
    kind = SCRIPT_KNOBS[name]
    if kind in (bool, str):
        return isinstance(value, kind)
    if isinstance(value, bool) or not isinstance(value, int if kind is int else (int, float)):
        return False
    if name == "micro_batch_size":
        return value >= 1
    return value > 0 if kind is float else value >= 0


def make_plan(request: LaunchRequest, declared: dict[str, Any], *, gpus: int = 0,
              physical_cores: int = 1) -> LaunchPlan:
    """The plan for `request` given the knobs the script declared (`{name: default}`)."""
    ns = request.namespace
    pins = {**request.config_pins, **pinned(ns, request.given)}
    current = current_config(ns, gpus=gpus, physical_cores=physical_cores)
    ignored: dict[str, str] = {}
    script_knobs: list[str] = []
    for name, value in declared.items():
        if name in SCRIPT_KNOBS and _valid(name, value):
            script_knobs.append(name)
            current[name] = value
        elif name in SCRIPT_KNOBS:
            ignored[name] = f"its default {value!r} is not a valid {name}"
        elif name != "grad_accum" and name not in LAUNCHER_KNOBS:
            ignored[name] = "not a catalogue knob: the script gets its default" if name not in CATALOGUE \
                else "not tuned by the launcher"
    accum = declared.get("grad_accum", 1)
    accum = accum if isinstance(accum, int) and not isinstance(accum, bool) and accum >= 1 else 1
    mbs = current.get("micro_batch_size")
    per_process = int(mbs) * accum if "micro_batch_size" in script_knobs else None
    if per_process is None:
        for knob in ("strategy", "num_processes"):
            pins.setdefault(knob, "the script reads no knob('micro_batch_size'), so the global batch would change"
                                  " with the process count")
    wanted = list(request.include) if request.include is not None else [*LAUNCHER_KNOBS, *SCRIPT_KNOBS]
    for name in wanted:
        if name in SCRIPT_KNOBS and name not in script_knobs:
            ignored.setdefault(name, "the script does not read it with knob()")
    strategies = ["single", "ddp"] + (["fsdp"] if gpus >= 2 else [])
    if request.machines > 1:  # several machines are never one process
        strategies = [s for s in strategies if s != "single"]
    if "strategy" in pins:
        strategies = [current["strategy"]]
    tunable = [k for k in wanted if k not in pins and (k in script_knobs or k in LAUNCHER_KNOBS)
               and (gpus or k not in GPU_ONLY)]
    if ("strategy" in tunable) != ("num_processes" in tunable) and not {"strategy", "num_processes"} & set(pins):
        tunable += [k for k in ("strategy", "num_processes") if k not in tunable]  # one move, not two
    if strategies == ["single"] or ("strategy" in pins and "num_processes" in pins):
        tunable = [k for k in tunable if k not in ("strategy", "num_processes")]
    if request.machines > 1 and len(strategies) == 1:  # DDP on CPUs: the processes per machine stay tunable
        tunable = [k for k in tunable if k != "strategy"]
    in_space: dict[str, Any] = {}
    if "num_nodes" in current:  # the allocation: pinned, in the space so the cost model sees every node
        in_space["num_nodes"] = current["num_nodes"]
    if "num_processes" in tunable:
        if "strategy" not in tunable:
            in_space["strategy"] = current["strategy"]
        if per_process is not None and "micro_batch_size" not in tunable:
            in_space["micro_batch_size"] = mbs  # its constraint keeps the global batch as processes change
    return LaunchPlan(current=current, tunable=tuple(tunable), pinned=pins, in_space_pins=in_space,
                strategies=tuple(strategies), per_process_batch=per_process,
                global_batch=per_process * int(current["num_processes"]) * int(current.get("num_nodes", 1))
                if per_process else None,
                declared=dict(declared), ignored=ignored)


# ---------------------------------------------------------------- the command of a config


def launch_command(request: LaunchRequest, config: dict[str, Any], *, gpu: bool = False,
                   port: int | str | None = None) -> tuple[list[str], dict[str, str]]:
    """The `accelerate launch` command running `config`, and the environment it adds.

    The user's tokens come first, unchanged, except `--cpu` where a CPU job runs several processes
    (accelerate then starts only one: docs/design.md); flags follow for the knobs in `config`, which are
    never ones the user gave (those are pinned, so not in a trial's config).
    """
    ns = request.namespace
    args = list(request.accelerate_args)
    env: dict[str, str] = {}
    machines = request.machines
    if machines > 1:  # `num_processes` is per machine; accelerate's --num_processes counts them all
        per_machine = int(config["num_processes"]) if "num_processes" in config else \
            (ns.num_processes // machines if ns.num_processes else 1)
        procs = per_machine * machines
    else:
        procs = int(config.get("num_processes", ns.num_processes or 1))
    strategy = config.get("strategy", "single" if procs == 1 else "ddp")
    if "num_processes" in config or (machines > 1 and "num_processes" not in request.given):
        args = drop_option(args, "num_processes") + ["--num_processes", str(procs)]
    if procs > 1 and not gpu and not (ns.use_fsdp or ns.use_deepspeed):
        env["ACCELERATE_USE_CPU"] = "1"
        args = [a for a in args if a != "--cpu"]
        if not ns.multi_gpu:
            args.append("--multi_gpu")
    elif gpu and "strategy" in config and strategy == "ddp" and not ns.multi_gpu:
        args.append("--multi_gpu")
    elif gpu and "strategy" in config and strategy == "fsdp":
        args += ["--use_fsdp", "--fsdp_version", "2"]
    if "fsdp_reshard_after_forward" in config:
        args += ["--fsdp_reshard_after_forward", str(bool(config["fsdp_reshard_after_forward"])).lower()]
    if "cpu_offload" in config:
        args += ["--fsdp_offload_params", str(bool(config["cpu_offload"])).lower()]
    if "precision" in config:
        args += ["--mixed_precision", _MIXED[config["precision"]]]
    if "compile" in config:
        args += ["--dynamo_backend", "no" if config["compile"] == "off" else "inductor"]
        if config["compile"] not in ("off", "default"):
            args += ["--dynamo_mode", str(config["compile"])]
    if "num_threads" in config:
        args += ["--num_cpu_threads_per_process", str(config["num_threads"])]
    if procs > 1 and port is not None and ("main_process_port" not in request.given or machines > 1):
        args = drop_option(args, "main_process_port") + ["--main_process_port", str(port)]
    if machines > 1 and (ns.rdzv_backend or "static") == "c10d":
        # The main machine hosts the c10d rendezvous: said outright, since by its host-name guess two
        # machines sharing one host (or an alias of it) would both try to.
        conf = [kv for kv in (ns.rdzv_conf or "").split(",") if kv.strip()]
        if not any(kv.split("=", 1)[0].strip() == "is_host" for kv in conf):
            conf.append(f"is_host={'true' if int(ns.machine_rank or 0) == 0 else 'false'}")
            args = drop_option(args, "rdzv_conf") + ["--rdzv_conf", ",".join(conf)]
    script = [request.script, *request.script_args]
    return [sys.executable, "-m", "accelerate.commands.launch", *args, *script], env


def drop_option(args: list[str], dest: str) -> list[str]:
    """`args` without the option `dest` and its value, in any spelling (`--main_process_port 29500`,
    `--main-process-port=29500`).

    Example:
        >>> drop_option(["--machine_rank", "1", "--multi_gpu", "--main-process-port=7"], "main_process_port")
        ['--machine_rank', '1', '--multi_gpu']
    """
    names = {f"--{dest}", f"--{dest.replace('_', '-')}"}
    out: list[str] = []
    skip = False
    for token in args:
        if skip:
            skip = False
            continue
        name = token.split("=", 1)[0]
        if name in names:
            skip = "=" not in token
            continue
        out.append(token)
    return out
