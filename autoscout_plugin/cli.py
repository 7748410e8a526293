"""`autoscout` console entry point.

    autoscout space [--global-batch N] [--workload FILE.json]   the space for this machine
    autoscout cpu [--refresh] [--json]                          this CPU's measured speeds (cached)
    autoscout plan --model PRESET --gpu GPU --gpus N --global-batch B [--seq-len S]
                   [--precision bf16|fp8] [--layout tp=4,pp=4,...] [--json OUT] [--top K]
                                                                rank parallel layouts on a GPU cluster
    autoscout infer (--model PATH [--allow-download] | --model-type TYPE) [--set k=v ...]
                    [--objective throughput|...] [--slo-p99-ms MS] [--requests N --prompt-len A:B --output-len N]
                    [--report PATH]                             tune a causal LM's serving settings here
    autoscout launch [--autoscout [--autoscout-trials N] [--autoscout-seconds S] [--autoscout-include K,K]
                     [--autoscout-report PATH] [--autoscout-store PATH] [--autoscout-timeout S]
                     [--autoscout-warmup N] [--autoscout-measure N] [--autoscout-confirm N]]
                     [accelerate launch args] SCRIPT [ARGS]
                                                                `accelerate launch`; with --autoscout, tuned first
    autoscout history migrate SRC DST                           copy a trial history (studies, trials, winners,
                                                                notes) into another store, e.g. a local SQLite
                                                                file into a shared postgresql://user@host/db
    autoscout history show STORE                                list a store's studies and winners

Every value is checked before any work starts (`autoscout_plugin.validate`): a bad one ends the command
with `autoscout: error: <option> must be ..., got <value>: <what to do>` and exit code 2, never a
traceback. Stated bounds: `--gpus` up to 1,048,576, `--global-batch` up to 16,777,216, `--seq-len` up to
4,194,304, `--requests` up to 100,000, token lengths up to 1,048,576, seeds 0 .. 2**32 - 1.
`infer` reads local files only unless `--allow-download` is given, and `--set` takes settings of the
model's config only (never loading options such as `trust_remote_code`). `history migrate` changes nothing
of SRC's history (a missing SRC file is refused, never created), is safe to run twice (studies already in
DST are left alone), and masks any password in a store URL it prints.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import NoReturn

from . import validate
from .costmodel import detect_cpu
from .serving import INFERENCE_KNOBS, OBJECTIVES, InferenceOptions, RequestMix
from .space import SpaceError
from .space.builder import build_space

MAX_REQUESTS = 100_000
"""`autoscout infer --requests` is at most 100,000."""


def _space(args: argparse.Namespace) -> int:
    workload: dict = {"global_batch": 32}
    if args.workload:
        try:
            data = json.loads(Path(args.workload).read_text(encoding="utf-8"))
        except OSError as exc:
            raise ValueError(f"--workload {args.workload}: cannot read it ({exc.strerror or exc}); give a JSON"
                             " file") from None
        except ValueError as exc:  # not UTF-8, or not JSON
            raise ValueError(f"--workload {args.workload}: not a JSON file ({exc})") from None
        workload = data.get("workload", data) if isinstance(data, dict) else data
        if not isinstance(workload, dict):
            raise ValueError(f"--workload {args.workload}: expected a JSON object describing the workload (or one"
                             f" with a 'workload' object), got {type(workload).__name__}; e.g. "
                             '{"global_batch": 32, "n_layer": 12}')
        workload = dict(workload)
    if args.global_batch is not None:  # given: it wins over the file's
        workload["global_batch"] = args.global_batch
    hardware = detect_cpu().to_json()
    space = build_space(workload, hardware)
    print(f"machine: {hardware['name']} ({hardware['cores']} cores, bf16={hardware['bf16']})")
    for knob in space.knobs:
        when = " when " + " and ".join(str(c) for c in knob.when) if knob.when else ""
        kind = "structural" if knob.structural else "dense"
        print(f"  {knob.name:28} {kind:10} {knob.grid()}{when}")
    for constraint in space.constraints:
        print(f"  constraint: {constraint}")
    print(f"{len(space.enumerate())} feasible grid configs")
    return 0


def _cpu(args: argparse.Namespace) -> int:
    from .costmodel.cpu_bench import cpu_speeds

    speeds = cpu_speeds(refresh=args.refresh)
    if args.json:
        print(json.dumps(speeds.to_json(), indent=2))
        return 0
    print(f"cpu {speeds.fingerprint}: {speeds.backend} kernels, measured in {speeds.measured_s:.1f} s")
    for threads, rate in sorted(speeds.gemm_flops_per_s.items()):
        print(f"  fp32 GEMM, {threads:3d} thread{'s' if threads > 1 else ' '}  {rate / 1e9:9.1f} GFLOP/s")
    bf16 = "not measured" if speeds.bf16_gemm_speedup is None else f"{speeds.bf16_gemm_speedup:.3g}x fp32"
    print(f"  bf16 GEMM                {bf16}")
    print(f"  memory copy              {speeds.mem_bytes_per_s / 1e9:9.1f} GB/s")
    return 0


def _plan(args: argparse.Namespace) -> int:
    from .costmodel.plan import format_plan, plan, write_plan_json

    result = plan(args.model, args.gpu, args.gpus, global_batch=args.global_batch, seq_len=args.seq_len,
                  precision=args.precision, layout=args.layout)
    print(format_plan(result, top=args.top))
    if args.json:
        print(f"wrote {write_plan_json(result, args.json)} ({len(result.ranked)} layouts)")
    return 0


def infer_inputs(args: argparse.Namespace) -> tuple[InferenceOptions, RequestMix]:
    """The checked options and request mix of `autoscout infer` (framework-free: no torch loaded yet)."""
    if not (args.model or args.model_type):
        raise ValueError("give --model (a local checkpoint or config) or --model-type (e.g. gpt2, llama)")
    validate.unique_keys("--set", (validate.config_override(item) for item in args.set or ()))
    options = InferenceOptions(objective=args.objective,
                               slo_p99_s=args.slo_p99_ms / 1e3 if args.slo_p99_ms is not None else None,
                               memory_cap_mb=args.memory_cap_mb, price_per_hour=args.price_per_hour,
                               max_trials=args.max_trials, max_seconds=args.max_seconds, include=args.include,
                               seed=args.seed, report=args.report)
    mix = RequestMix(n=args.requests, prompt_len=validate.lengths("--prompt-len", args.prompt_len)
                     if isinstance(args.prompt_len, str) else args.prompt_len,
                     output_len=validate.lengths("--output-len", args.output_len)
                     if isinstance(args.output_len, str) else args.output_len, seed=args.seed)
    return options, mix


def _infer(args: argparse.Namespace) -> int:
    infer_inputs(args)  # every check that needs no model runs before torch and transformers load
    from .integrations.inference import main as infer_main  # imports torch and transformers

    return infer_main(args)


def _history(args: argparse.Namespace) -> int:
    from .history import migrate, show  # opens stores (SQLAlchemy): loaded only for this command
    from .redact import redact

    try:
        print(migrate(args.src, args.dst).summary() if args.action == "migrate" else show(args.store))
    except ValueError as exc:  # StoreError: the stores mask passwords already; this is the last net
        raise ValueError(redact(str(exc))) from None
    return 0


def _launch(argv: Sequence[str]) -> int:
    from .integrations.accelerate import main as launch_main  # imports accelerate and torch

    return launch_main(argv)


class _Parser(argparse.ArgumentParser):
    """argparse, with errors as `autoscout: error: --gpus must be an integer from 1 to ..., got 0: ...`
    (exit code 2, after the usage line) rather than `autoscout plan: error: argument --gpus: must be ...`."""

    def error(self, message: str) -> NoReturn:
        found = re.match(r"argument ([^\s:/]+)[^:]*: (.*)", message, re.S)
        if found:
            flag, rest = found.groups()
            message = rest if rest.startswith(flag) else f"{flag} {rest}"
        self.print_usage(sys.stderr)
        self.exit(2, f"autoscout: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    """The `autoscout` command line (all but `launch`, which is accelerate's parser with ours added)."""
    from .costmodel.catalogue import GPUS
    from .costmodel.plan import MAX_GLOBAL_BATCH, MAX_GPUS, MAX_SEQ_LEN
    from .costmodel.presets import PRESETS

    parser = _Parser(prog="autoscout", description="AutoScout: tune a PyTorch job's system config")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("launch", add_help=False,
                   help="`accelerate launch` (same arguments); with --autoscout, tune the launch and the script's"
                        " knobs first ('autoscout launch --help' lists the options)")
    space = sub.add_parser("space", help="show the configuration space for this machine")
    space.add_argument("--global-batch", type=validate.int_arg(1, MAX_GLOBAL_BATCH),
                       help=f"sequences per optimizer step, 1 to {MAX_GLOBAL_BATCH} (default: the workload file's,"
                            " else 32)")
    space.add_argument("--workload", type=validate.path_arg(),
                       help="a JSON file with a workload description (a table's sidecar works)")
    space.set_defaults(func=_space)
    cpu = sub.add_parser("cpu", help="measure this CPU's GEMM and memory speeds (cached per machine)")
    cpu.add_argument("--refresh", action="store_true", help="measure again even if cached")
    cpu.add_argument("--json", action="store_true", help="print the speeds as JSON")
    cpu.set_defaults(func=_cpu)

    planner = sub.add_parser("plan", help="rank parallel layouts of a model on a GPU cluster (no GPU needed)",
                             description="Enumerate tp/pp/cp/vp/dp/micro-batch/sharding/recomputation layouts and "
                             "rank them by predicted tokens/s per GPU.")
    planner.add_argument("--model", required=True, type=validate.text_arg(), help="a preset: " + ", ".join(PRESETS))
    planner.add_argument("--gpu", required=True, type=validate.text_arg(), help="a GPU: " + ", ".join(GPUS))
    planner.add_argument("--gpus", type=validate.int_arg(1, MAX_GPUS, hint="the number of GPUs in the cluster"),
                         required=True, help=f"number of GPUs, 1 to {MAX_GPUS}")
    planner.add_argument("--global-batch", type=validate.int_arg(1, MAX_GLOBAL_BATCH), required=True,
                         help=f"sequences per optimizer step, 1 to {MAX_GLOBAL_BATCH}")
    planner.add_argument("--seq-len", type=validate.int_arg(1, MAX_SEQ_LEN),
                         help=f"tokens per sequence, 1 to {MAX_SEQ_LEN} (default: the preset's)")
    planner.add_argument("--precision", default="bf16", choices=("bf16", "fp16", "fp8", "fp32", "tf32"))
    planner.add_argument("--layout", type=validate.text_arg(hint="key=value items such as tp=4,pp=4,mbs=1"),
                         help="evaluate one layout, e.g. tp=4,pp=4,cp=1,vp=20,mbs=1 (each key once; sp, offload"
                              " and compile take 1/0)")
    planner.add_argument("--json", metavar="OUT", type=validate.path_arg(file=True),
                         help="write every ranked layout to this JSON file")
    planner.add_argument("--top", type=validate.int_arg(0, hint="0 prints only the summary"), default=10,
                         help="rows to print (default 10; 0 for none)")
    planner.set_defaults(func=_plan)

    infer = sub.add_parser("infer", help="tune a causal LM's serving settings on this machine",
                           description="Tune batch size, KV cache, attention implementation, precision, compile "
                           "and threads of a Hugging Face causal LM for a synthetic request mix. Only local files "
                           "are read unless --allow-download is given.")
    source = infer.add_mutually_exclusive_group()
    source.add_argument("--model", type=validate.text_arg(),
                        help="a local checkpoint directory or config.json (nothing is downloaded; with "
                             "--allow-download, also a Hugging Face Hub model name)")
    source.add_argument("--model-type", type=validate.text_arg(),
                        help="build from a config with random weights: gpt2, llama, ...")
    infer.add_argument("--allow-download", action="store_true",
                       help="let --model name a Hugging Face Hub model and fetch its config (random weights); this"
                            " contacts the Hub and sends HF_TOKEN if set. Without it nothing is downloaded. No code"
                            " from a checkpoint is ever run")
    infer.add_argument("--set", action="append", metavar="KEY=VALUE", type=validate.config_override_arg(),
                       help="model config overrides, e.g. n_layer=2: each KEY once, a setting of the model's "
                            f"config; sizes (n_*, num_*, *_size, ...) from 1 to {validate.MAX_SIZE}; never "
                            "loading options such as trust_remote_code")
    infer.add_argument("--objective", default="throughput", choices=OBJECTIVES,
                       help="throughput, latency_p50, latency_p99, cost (needs --price-per-hour), pareto")
    infer.add_argument("--slo-p99-ms", type=validate.number_arg(unit="milliseconds",
                                                                hint="leave it out for no SLO"),
                       help="p99 latency SLO per request, milliseconds (> 0; leave it out for no SLO)")
    infer.add_argument("--memory-cap-mb", type=validate.number_arg(unit="MB"), help="memory cap, MB (> 0)")
    infer.add_argument("--price-per-hour", type=validate.number_arg(unit="dollars"),
                       help="machine price in dollars per hour, for --objective cost")
    infer.add_argument("--max-trials", type=validate.int_arg(1), default=12, help="configurations to measure"
                       " (default 12)")
    infer.add_argument("--max-seconds", type=validate.number_arg(unit="seconds"), help="tuning budget, seconds")
    infer.add_argument("--include", type=validate.names_arg(INFERENCE_KNOBS),
                       help="comma-separated knobs to tune (default: all that apply): " + ", ".join(INFERENCE_KNOBS))
    infer.add_argument("--requests", type=validate.int_arg(1, MAX_REQUESTS), default=64,
                       help=f"requests in the mix, 1 to {MAX_REQUESTS} (default 64)")
    infer.add_argument("--prompt-len", type=validate.lengths_arg(), default="16:64",
                       help=f"N, LOW:HIGH or A,B,C tokens, 1 to {validate.MAX_TOKENS} (default 16:64)")
    infer.add_argument("--output-len", type=validate.lengths_arg(), default="32",
                       help=f"N, LOW:HIGH or A,B,C tokens, 1 to {validate.MAX_TOKENS} (default 32)")
    infer.add_argument("--seed", type=validate.seed_arg(), default=0, help=f"0 to {validate.MAX_SEED}")
    infer.add_argument("--report", type=validate.path_arg(), help="write PATH.json and PATH.html")
    infer.set_defaults(func=_infer)

    history = sub.add_parser("history", help="copy or list a trial history (SQLite files, postgresql:// URLs)",
                             description="Move a trial history between stores, e.g. your SQLite file into the "
                             "PostgreSQL store your team shares, or list what a store holds. Passwords in URLs are "
                             "masked in every line printed; better still, leave them out of the URL and use "
                             "PGPASSWORD or ~/.pgpass.")
    actions = history.add_subparsers(dest="action", metavar="{migrate,show}", required=True)
    store_hint = "a trial store: a file path, sqlite:///PATH, or postgresql://user@host:port/database"
    migrate = actions.add_parser("migrate", help="copy every study (trials, winner) and note of SRC into DST",
                                 description="Copy every study of SRC, oldest first, with its trials and winner, and "
                                 "every note DST lacks, into DST. SRC is only read; studies DST already holds are "
                                 "left alone, so running it twice copies nothing the second time.")
    migrate.add_argument("src", metavar="SRC", type=validate.text_arg(hint=store_hint),
                         help="the store to copy from (it must exist), e.g. ~/.cache/autoscout/trials.sqlite")
    migrate.add_argument("dst", metavar="DST", type=validate.text_arg(hint=store_hint),
                         help="the store to copy into, e.g. postgresql://tuner@db:5432/autoscout (a new SQLite "
                              "file is created; a PostgreSQL database must exist)")
    migrate.set_defaults(func=_history)
    show = actions.add_parser("show", help="list a store's studies: trials, winner, workload")
    show.add_argument("store", metavar="STORE", type=validate.text_arg(hint=store_hint),
                      help="the store to list (it must exist)")
    show.set_defaults(func=_history)
    return parser


def _exit_code(exc: SystemExit) -> int:
    return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)


def main(argv: Sequence[str] | None = None) -> int:
    """Run `autoscout ARGV`; returns the exit code (2 for a refused command line, with the reason on stderr)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["launch"]:  # every later argument is accelerate's or ours: no argparse of our own here
        try:
            return _launch(argv[1:])
        except SystemExit as exc:  # accelerate's parser refused the command line (and said why)
            return _exit_code(exc)
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # a refused value (message printed), or --help
        return _exit_code(exc)
    try:
        return int(args.func(args))
    except (SpaceError, ValueError, OSError) as exc:
        print(f"autoscout: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
