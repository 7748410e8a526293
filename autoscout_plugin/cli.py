"""`autoscout` console entry point.

    autoscout space [--global-batch N] [--workload FILE.json]   the space for this machine
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


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="autoscout", description="AutoScout: tune a PyTorch job's system config")
    sub = parser.add_subparsers(dest="command", required=True)
    space = sub.add_parser("space", help="show the configuration space for this machine")
    space.add_argument("--global-batch", type=int, default=32)
    space.add_argument("--workload", help="a JSON file with a workload description (a table's sidecar works)")
    space.set_defaults(func=_space)
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except (SpaceError, ValueError, OSError) as exc:
        print(f"autoscout: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
