"""The subprocess tier, relaunch and two-process DDP: the example script runs as a real command,
as a user would run it, with AutoScout re-running it for trials and for the winner (under DDP, every rank
runs each trial in lockstep instead)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TINY = ["--layers", "2", "--embd", "32", "--vocab", "128", "--seq-len", "16", "--warmup-steps", "1",
        "--measure-steps", "2", "--no-net-gain"]


def run_example(tmp_path: Path, *args: str, timeout: float = 1100) -> tuple[subprocess.CompletedProcess[str], dict]:
    """Run the example script; each of these runs takes about a minute on a quiet 2-core machine (the limits
    leave room for a slow, loaded one)."""
    summary = tmp_path / "summary.json"
    env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(tmp_path / "inductor"),
           "AUTOSCOUT_STORE": str(tmp_path / "store.sqlite")}
    proc = subprocess.run([sys.executable, "-m", "examples.lightning_gpt2", *TINY, "--summary-out", str(summary),
                           "--report", str(tmp_path / "report"), *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc, json.loads(summary.read_text())


@pytest.mark.timeout(1200)
def test_a_ddp_winner_relaunches_the_script_with_the_global_batch_kept(tmp_path: Path) -> None:
    # The single-process runs crash (`world=1`), so only DDP trials (subprocess tier) succeed: the
    # winner needs two processes and the script is re-run with it, in the same command.
    proc, summary = run_example(tmp_path, "--steps", "3", "--trials", "3", "--fail-if", "world=1",
                                "--include", "strategy,num_processes,micro_batch_size,ddp_bucket_view")
    report = json.loads((tmp_path / "report.json").read_text())
    tiers = {t["metrics"].get("tier") for t in report["trials"] if t["status"] == "ok"}
    assert tiers == {2}
    assert report["best_config"]["strategy"] == "ddp" and report["notes"]["relaunched"] is True
    assert "relaunched with the tuned config" in proc.stderr
    assert summary["world_size"] == 2 and summary["global_step"] == 3
    # micro-batch x accumulation x processes is still the user's global batch of 8
    assert summary["batch_size"] * summary["accumulate_grad_batches"] * 2 == 8
    assert summary["report"]["relaunched"] is True
    # a DDP argument (the catalogue's `ddp_bucket_view`) reached the relaunched fit's DDP wrapper
    assert summary["ddp"]["gradient_as_bucket_view"] is report["best_config"]["ddp_bucket_view"]
    # no lightning_logs or checkpoints from the trials
    assert not (ROOT / "lightning_logs").exists() or not any((ROOT / "lightning_logs").iterdir())


@pytest.mark.timeout(1200)
def test_relaunch_off_recommends_the_trainer_arguments(tmp_path: Path) -> None:
    # Single-process trials crash (in trials only), so the winner is DDP; the main fit stays single.
    proc, summary = run_example(tmp_path, "--steps", "2", "--trials", "4", "--fail-if", "trial_world=1",
                                "--include", "strategy,num_processes,micro_batch_size", "--no-relaunch")
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["notes"]["recommended"]["strategy"] == "ddp"
    assert report["notes"]["recommended_args"].startswith('Trainer(strategy="ddp", devices=2')
    assert "recommended (relaunch is off)" in proc.stderr
    assert summary["world_size"] == 1  # no relaunch; the main fit ran here with the user's settings
    assert summary["global_step"] == 2


@pytest.mark.timeout(1200)
def test_under_ddp_rank_zero_decides_and_every_rank_applies_the_same_winner(tmp_path: Path) -> None:
    proc, summary = run_example(tmp_path, "--steps", "2", "--trials", "3", "--devices", "2",
                                "--include", "micro_batch_size,num_threads,ddp_bucket_view")
    rank1 = json.loads((tmp_path / "summary.json.rank1").read_text())
    report = json.loads((tmp_path / "report.json").read_text())
    best = report["best_config"]
    assert report["notes"]["pinned"]["strategy"].startswith("Trainer(strategy='ddp'")
    assert summary["world_size"] == 2
    for rank in (summary, rank1):
        assert rank["batch_size"] == best["micro_batch_size"] and rank["num_threads"] == best["num_threads"]
        assert rank["batch_size"] * rank["accumulate_grad_batches"] * 2 == 16  # the user's 8 per rank x 2
        assert rank["ddp"]["gradient_as_bucket_view"] is best["ddp_bucket_view"]  # applied before DDP wraps
    # Every rank runs each trial in lockstep in its own process (a DDP `Trainer` over the job's process group, so
    # `ddp_bucket_view` changes in place): no re-run of the script (tier 2), as before issue 20.
    assert all(t["metrics"].get("tier") == 0 for t in report["trials"] if t["status"] == "ok")


@pytest.mark.timeout(1200)
def test_parallel_trials_re_run_the_script_two_at_once_and_the_fit_gets_the_winner(tmp_path: Path) -> None:
    proc, summary = run_example(tmp_path, "--steps", "3", "--trials", "4", "--parallel", "2",
                                "--include", "micro_batch_size,num_threads")
    assert "up to 2 trials at once on local x2" in proc.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    f2 = [t for t in report["trials"] if t["fidelity"] == "F2"]
    assert len(f2) == 4 and all(t["status"] == "ok" for t in f2)
    # the user's own settings and the search's trials are re-runs of the script (jobs), each ran somewhere
    assert all(t["where"] for t in f2) and all(t["metrics"].get("tier") is None for t in f2)
    assert len({json.dumps(t["config"], sort_keys=True) for t in f2}) == 4
    best = report["best_config"]
    assert summary["global_step"] == 3 and summary["batch_size"] == best["micro_batch_size"]
    assert summary["num_threads"] == best["num_threads"]


def test_parallel_trials_in_a_process_with_no_script_to_re_run_are_refused_before_any_trial() -> None:
    import lightning.pytorch as pl
    from autoscout_plugin.integrations.lightning import AutoScoutCallback

    from examples.lightning_gpt2 import GPT2Module

    callback = AutoScoutCallback(parallel=2, max_trials=2, net_gain=False)
    trainer = pl.Trainer(max_steps=1, callbacks=[callback], logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False)
    with pytest.raises(ValueError, match="runs its trials in this process.*autoscout launch"):
        trainer.fit(GPT2Module(n_layer=1, n_embd=16, vocab=64, seq_len=8, samples=16))
