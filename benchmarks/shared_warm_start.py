"""Warm start across machines through a shared PostgreSQL store: the job's end time on the second machine.

Two separate processes stand in for two machines running the same Lightning job (`examples.lightning_gpt2`),
each with its own working directory, HOME, cache and temp folder: only the PostgreSQL store is shared. The
first tunes (its trial budget) and runs the main fit; the second finds the first one's winner in the store
and runs the main fit with zero trials. Printed: trials, tuning seconds and the whole job's wall time of
each, and whether the second applied the first one's config.

    python -m benchmarks.shared_warm_start [--url postgresql://...] [--trials 6] [--steps 60] [--json OUT]

Without `--url` a throwaway server is started (`tests/pg.py`).
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

ROOT = Path(__file__).resolve().parents[1]
MODEL = ["--layers", "2", "--embd", "128", "--vocab", "8192", "--seq-len", "64"]


def run_machine(root: Path, url: str, trials: int, steps: int) -> dict[str, Any]:
    cwd, home, tmp = root / "cwd", root / "home", root / "tmp"
    for folder in (cwd, home, tmp):
        folder.mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if k != "AUTOSCOUT_STORE" and not k.startswith("PG")}
    env.update(PYTHONPATH=str(ROOT), HOME=str(home), XDG_CACHE_HOME=str(home / ".cache"), TMPDIR=str(tmp),
               TORCHINDUCTOR_CACHE_DIR=str(root / "inductor"))
    command = [sys.executable, "-m", "examples.lightning_gpt2", *MODEL, "--trials", str(trials), "--steps",
               str(steps), "--store", url, "--report", str(cwd / "report"), "--summary-out", str(cwd / "summary.json")]
    started = time.perf_counter()
    proc = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=1800, check=False)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"the job on {root.name} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    report = json.loads((cwd / "report.json").read_text())
    return {"machine": root.name, "wall_s": round(wall, 1), "trials": len(report["trials"]),
            "reused": report["reused"], "tuning_s": round(report.get("tuning_s") or 0.0, 1),
            "best_config": report["best_config"], "fingerprint": report["fingerprint"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a PostgreSQL database to use (default: a throwaway server)")
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--json", help="write the figures here")
    args = parser.parse_args(argv)
    server = None
    url = args.url
    if url is None:
        sys.path.insert(0, str(ROOT))
        from tests.pg import PostgresServer

        server = PostgresServer().start()
        url = server.create_database("warm_start")
    try:
        with tempfile.TemporaryDirectory(prefix="autoscout-warm-") as work:
            first = run_machine(Path(work) / "machine-a", url, args.trials, args.steps)
            second = run_machine(Path(work) / "machine-b", url, args.trials, args.steps)
    finally:
        if server is not None:
            server.stop()
    print("| machine | trials | reused | tuning s | job wall s (tuning included) |")
    print("|---|---|---|---|---|")
    for row in (first, second):
        print(f"| {row['machine']} | {row['trials']} | {row['reused']} | {row['tuning_s']} | {row['wall_s']} |")
    same = first["best_config"] == second["best_config"] and first["fingerprint"] == second["fingerprint"]
    print(f"second machine applied the first one's winner: {same}; its job took "
          f"{second['wall_s'] / first['wall_s']:.2f}x the first one's wall time")
    if args.json:
        Path(args.json).write_text(json.dumps({"first": first, "second": second}, indent=1))
    ok = same and second["reused"] and second["trials"] == 0 and first["trials"] > 0
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
