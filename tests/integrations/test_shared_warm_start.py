"""Warm start across machines: two separate processes stand in for two machines running the same real
Lightning job (`examples/lightning_gpt2.py`, whose `--store` goes to `AutoScoutOptions(store=...)`), with their
own working directory, HOME, cache and temp folder, so nothing local is shared; only the PostgreSQL store is.
The first machine tunes and stores a winner; the second reuses it with zero trials, through the server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from autoscout_plugin.store import PostgresStore

ROOT = Path(__file__).resolve().parents[2]
TINY = ["--layers", "2", "--embd", "32", "--vocab", "128", "--seq-len", "16", "--warmup-steps", "1",
        "--measure-steps", "2", "--steps", "1", "--trials", "2", "--include", "micro_batch_size,num_threads",
        "--no-net-gain"]
RUN_S = 240
"""One run takes about 15 s on a quiet 2-core machine; the limit leaves room for a loaded one."""


def run_on_machine(root: Path, store: str) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    """The example job on a 'machine' of its own under `root`: its process, folders and environment."""
    cwd, home, tmp = root / "cwd", root / "home", root / "tmp"
    for folder in (cwd, home, tmp):
        folder.mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if k not in ("AUTOSCOUT_STORE", "AUTOSCOUT_LAUNCH")
           and not k.startswith("PG")}
    env.update(PYTHONPATH=str(ROOT), HOME=str(home), XDG_CACHE_HOME=str(home / ".cache"), TMPDIR=str(tmp),
               TORCHINDUCTOR_CACHE_DIR=str(root / "inductor"), HF_HOME=str(root / "hf"), OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "examples.lightning_gpt2", *TINY, "--store", store,
                           "--report", str(cwd / "report"), "--summary-out", str(cwd / "summary.json")],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=RUN_S, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "cannot use the trial store" not in proc.stderr  # no fallback to a local store
    return proc, json.loads((cwd / "report.json").read_text())


def local_stores(root: Path) -> list[str]:
    """Trial stores (SQLite files, fallback folders) a machine left anywhere in its folders."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")
                  if ".sqlite" in p.name or p.name.startswith("autoscout-fallback-"))


@pytest.mark.slow
@pytest.mark.timeout(2 * RUN_S + 60)
def test_a_second_machine_reuses_the_first_machines_winner_with_zero_trials(tmp_path: Path, postgres_url: str
                                                                           ) -> None:
    first_root, second_root = tmp_path / "machine-a", tmp_path / "machine-b"
    _, first = run_on_machine(first_root, postgres_url)
    # 2 trials at F2, then a paired confirmation when the winner is not the user's own config
    assert first["reused"] is False and [t["fidelity"] for t in first["trials"]].count("F2") == 2
    with closing(PostgresStore(postgres_url)) as store:
        stored = store.winner(first["fingerprint"])
    assert stored is not None and stored[0] == first["best_config"]

    proc, second = run_on_machine(second_root, postgres_url)
    assert second["reused"] is True
    assert second["trials"] == []  # zero trials profiled
    assert second["fingerprint"] == first["fingerprint"]
    assert second["best_config"] == first["best_config"]
    assert "reused the stored winner" in proc.stderr
    summary = json.loads((second_root / "cwd" / "summary.json").read_text())
    assert summary["batch_size"] == first["best_config"]["micro_batch_size"]  # the winner was applied
    assert summary["num_threads"] == first["best_config"]["num_threads"]
    assert local_stores(first_root) == [] and local_stores(second_root) == []  # the server was the only store
    with closing(PostgresStore(postgres_url)) as store:
        (study,) = store.studies()
        assert len(store.trials(study["id"])) == len(first["trials"])  # the second machine added none
