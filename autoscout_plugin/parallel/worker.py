"""`python -m autoscout_plugin.parallel.worker JOB.json OUTCOME.json`: run one trial job (a local
executor's slot), write its outcome. A SIGTERM stops the trial's whole process tree first."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from ..profiling import TrialOutcome, stop_signals
from .jobs import run_trial_job


def outcome_from_json(data: dict) -> TrialOutcome:
    """The `TrialOutcome` a worker wrote (`dataclasses.asdict` of it)."""
    return TrialOutcome(**{k: v for k, v in data.items() if k in TrialOutcome.__dataclass_fields__})


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 2:
        print("usage: python -m autoscout_plugin.parallel.worker JOB.json OUTCOME.json", file=sys.stderr)
        return 2
    job = json.loads(Path(args[0]).read_text(encoding="utf-8"))
    with stop_signals():
        outcome = run_trial_job(job)
    partial = f"{args[1]}.partial"
    Path(partial).write_text(json.dumps(asdict(outcome)), encoding="utf-8")
    os.replace(partial, args[1])  # the executor never reads half an outcome
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
