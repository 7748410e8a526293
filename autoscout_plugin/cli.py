"""`autoscout` console entry point.

    autoscout space [--global-batch N] [--workload FILE.json]   the space for this machine
    autoscout cpu [--refresh] [--json]                          this CPU's measured speeds (cached)
    autoscout plan --model PRESET --gpu GPU --gpus N --global-batch B [--seq-len S]
                   [--precision bf16|fp8] [--layout tp=4,pp=4,...] [--json OUT] [--top K]
                                                                rank parallel layouts on a GPU cluster
    autoscout infer (--model PATH | --model-type TYPE [--set k=v ...]) [--objective throughput|...]
                    [--slo-p99-ms MS] [--requests N --prompt-len A:B --output-len N] [--report PATH]
                                                                tune a causal LM's serving settings here
    autoscout launch [--autoscout [--autoscout-trials N] [--autoscout-seconds S] [--autoscout-include K,K]
                     [--autoscout-report PATH] [--autoscout-store PATH] [--autoscout-timeout S]
                     [--autoscout-warmup N] [--autoscout-measure N] [--autoscout-confirm N]]
                     [accelerate launch args] SCRIPT [ARGS]
                                                                `accelerate launch`; with --autoscout, tuned first
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from .costmodel import detect_cpu
from .space import SpaceError
from .space.builder import build_space


def _space(args: argparse.Namespace) -> int:
    workload = {"global_batch": args.global_batch}
    if args.workload:
        data = json.loads(Path(args.workload).read_text(encoding="utf-8"))
        workload = data.get("workload", data)
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


def _infer(args: argparse.Namespace) -> int:
    from .integrations.inference import main as infer_main  # imports torch and transformers

    return infer_main(args)


def _launch(argv: Sequence[str]) -> int:
    from .integrations.accelerate import main as launch_main  # imports accelerate and torch

    return launch_main(argv)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["launch"]:  # every later argument is accelerate's or ours: no argparse of our own here
        return _launch(argv[1:])
    parser = argparse.ArgumentParser(prog="autoscout", description="AutoScout: tune a PyTorch job's system config")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("launch", add_help=False,
                   help="`accelerate launch` (same arguments); with --autoscout, tune the launch and the script's"
                        " knobs first ('autoscout launch --help' lists the options)")
    space = sub.add_parser("space", help="show the configuration space for this machine")
    space.add_argument("--global-batch", type=int, default=32)
    space.add_argument("--workload", help="a JSON file with a workload description (a table's sidecar works)")
    space.set_defaults(func=_space)
    cpu = sub.add_parser("cpu", help="measure this CPU's GEMM and memory speeds (cached per machine)")
    cpu.add_argument("--refresh", action="store_true", help="measure again even if cached")
    cpu.add_argument("--json", action="store_true", help="print the speeds as JSON")
    cpu.set_defaults(func=_cpu)
    from .costmodel.catalogue import GPUS
    from .costmodel.presets import PRESETS

    planner = sub.add_parser("plan", help="rank parallel layouts of a model on a GPU cluster (no GPU needed)",
                             description="Enumerate tp/pp/cp/vp/dp/micro-batch/sharding/recomputation layouts and "
                             "rank them by predicted tokens/s per GPU.")
    planner.add_argument("--model", required=True, help="a preset: " + ", ".join(PRESETS))
    planner.add_argument("--gpu", required=True, help="a GPU: " + ", ".join(GPUS))
    planner.add_argument("--gpus", type=int, required=True, help="number of GPUs")
    planner.add_argument("--global-batch", type=int, required=True, help="sequences per optimizer step")
    planner.add_argument("--seq-len", type=int, help="tokens per sequence (default: the preset's)")
    planner.add_argument("--precision", default="bf16", choices=("bf16", "fp16", "fp8", "fp32", "tf32"))
    planner.add_argument("--layout", help="evaluate one layout, e.g. tp=4,pp=4,cp=1,vp=20,mbs=1")
    planner.add_argument("--json", metavar="OUT", help="write every ranked layout to this JSON file")
    planner.add_argument("--top", type=int, default=10, help="rows to print (default 10)")
    planner.set_defaults(func=_plan)
    infer = sub.add_parser("infer", help="tune a causal LM's serving settings on this machine",
                           description="Tune batch size, KV cache, attention implementation, precision, compile "
                           "and threads of a Hugging Face causal LM for a synthetic request mix.")
    infer.add_argument("--model", help="a local checkpoint directory or config.json (nothing is downloaded)")
    infer.add_argument("--model-type", help="build from a config with random weights: gpt2, llama, ...")
    infer.add_argument("--set", action="append", metavar="KEY=VALUE", help="config overrides, e.g. n_layer=2")
    infer.add_argument("--objective", default="throughput", help="throughput, latency_p50, latency_p99, cost, pareto")
    infer.add_argument("--slo-p99-ms", type=float, help="p99 latency SLO per request, milliseconds")
    infer.add_argument("--memory-cap-mb", type=float)
    infer.add_argument("--price-per-hour", type=float, help="machine price, for --objective cost")
    infer.add_argument("--max-trials", type=int, default=12)
    infer.add_argument("--max-seconds", type=float)
    infer.add_argument("--include", help="comma-separated knobs to tune (default: all that apply)")
    infer.add_argument("--requests", type=int, default=64)
    infer.add_argument("--prompt-len", default="16:64", help="N, LOW:HIGH or A,B,C tokens")
    infer.add_argument("--output-len", default="32", help="N, LOW:HIGH or A,B,C tokens")
    infer.add_argument("--seed", type=int, default=0)
    infer.add_argument("--report", help="write PATH.json and PATH.html")
    infer.set_defaults(func=_infer)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except (SpaceError, ValueError, OSError) as exc:
        print(f"autoscout: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
