"""`autoscout launch --autoscout` on two "machines": two launches on 127.0.0.1 with `--num_machines 2`,
`--machine_rank 0` and `1`, a c10d rendezvous over gloo, as a user runs them on two hosts (or under
`srun`). Machine rank 0 searches; both run every trial in lockstep and then the same winner."""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
from autoscout_plugin.integrations._accelerate_args import LaunchError, launch_command, make_plan, parse
from autoscout_plugin.integrations._nodes import SILENCE_S

from autoscout_plugin.profiling import free_port

ROOT = Path(__file__).resolve().parents[2]
WRAPPER = '''
import os, sys
sys.path.insert(0, {root!r})
import autoscout_plugin as autoscout
bad = os.environ.get("TEST_FAIL_MICRO_BATCH")  # set on one machine only: its part of such a trial fails
if bad and autoscout.knob("micro_batch_size", 8) == int(bad):
    raise RuntimeError(f"injected failure on this machine for micro_batch_size={{bad}}")
from examples.accelerate_loop import main
code = main()
# Out at once, past the interpreter's teardown: with two "machines" on one host, torch's teardown after a gloo job
# sometimes aborts ("terminate called without an active exception", 5 of 20 plain `accelerate launch` runs here,
# none of 10 with this exit), which would fail a real run that finished its work.
sys.stdout.flush(); sys.stderr.flush()
os._exit(code)
'''
SCRIPT_ARGS = ["--steps", "30", "--micro-batch", "8", "--width", "64", "--features", "16", "--samples", "1024"]


@pytest.fixture
def script(tmp_path: Path) -> Path:
    path = tmp_path / "train.py"
    path.write_text(WRAPPER.format(root=str(ROOT)))
    return path


def node_args(rank: int, port: int, *extra: str) -> list[str]:
    return ["--autoscout", "--num_machines", "2", "--machine_rank", str(rank), "--main_process_ip", "127.0.0.1",
            "--main_process_port", str(port), "--rdzv_backend", "c10d", "--num_processes", "2", *extra]


class Machine:
    """One machine's `autoscout launch`, in a process (and session) of its own."""

    def __init__(self, tmp: Path, rank: int, argv: list[str], **env: str) -> None:
        tmp.mkdir(exist_ok=True)
        self.rank = rank
        self.log = tmp / f"machine{rank}.log"
        self.env = {**os.environ, "HF_HOME": str(tmp / "hf"), "TORCHINDUCTOR_CACHE_DIR": str(tmp / "inductor"),
                    "AUTOSCOUT_STORE": str(tmp / f"store{rank}.sqlite"), **env}
        for name in ("AUTOSCOUT_LAUNCH", "AUTOSCOUT_DECLARED", "OMP_NUM_THREADS"):
            self.env.pop(name, None)
        with self.log.open("wb") as err:
            self.proc = subprocess.Popen([sys.executable, "-m", "autoscout_plugin.cli", "launch", *argv], env=self.env,
                                         cwd=tmp, stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait()

    @property
    def text(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture
def machines() -> Any:
    started: list[Machine] = []
    yield started
    for machine in started:
        machine.kill()


def trial_rows(store: Path) -> list[dict[str, Any]]:
    with sqlite3.connect(store) as db:
        return [{**json.loads(data), "status": status} for status, data in
                db.execute("SELECT status, data FROM trials ORDER BY number")]


def leftovers(marker: str) -> list[int]:
    """Processes still running the test's script."""
    return [p.pid for p in psutil.process_iter(["cmdline"]) if any(marker in str(a) for a in p.info["cmdline"] or ())]


# ---------------------------------------------------------------- the command line


def test_a_multi_machine_launch_needs_its_rank_the_main_address_and_an_even_share(script: Path) -> None:
    base = ["--autoscout", "--num_machines", "2", "--main_process_ip", "10.0.0.1", "--main_process_port", "29500"]
    with pytest.raises(LaunchError, match="--machine_rank"):
        parse([*base, str(script)])
    with pytest.raises(LaunchError, match=r"--machine_rank 2: give 0 to 1"):
        parse([*base, "--machine_rank", "2", str(script)])
    with pytest.raises(LaunchError, match="--main_process_ip"):
        parse(["--autoscout", "--num_machines", "2", "--machine_rank", "0", "--main_process_port", "29500",
               str(script)])
    with pytest.raises(LaunchError, match="--main_process_port 0"):
        parse([*base[:-1], "0", "--machine_rank", "0", str(script)])
    with pytest.raises(LaunchError, match="--num_processes 3 is not a multiple of --num_machines 2"):
        parse([*base, "--machine_rank", "0", "--num_processes", "3", str(script)])
    with pytest.raises(LaunchError, match="trials run one at a time"):
        parse([*base, "--machine_rank", "0", "--autoscout-parallel", "2", str(script)])
    with pytest.raises(LaunchError, match="--autoscout-join-timeout -1"):
        parse([*base, "--machine_rank", "0", "--autoscout-join-timeout", "-1", str(script)])
    with pytest.raises(LaunchError, match="no effect on one machine"):
        parse(["--autoscout", "--autoscout-join-timeout", "10", str(script)])


def test_every_machine_builds_the_same_job_and_its_own_part_of_a_trial(script: Path) -> None:
    ranks = [parse([*node_args(r, 29500), "--autoscout-join-timeout", "9", str(script)]) for r in (0, 1)]
    assert ranks[0].job_id() == ranks[1].job_id()  # the machine's own rank is not part of the job
    assert ranks[0].join_timeout_s == 9.0 and ranks[0].machines == 2
    plan = make_plan(ranks[0], {"micro_batch_size": 8, "grad_accum": 1}, physical_cores=2)
    # num_processes is per machine; the allocation is pinned inside the space; the global batch spans both
    assert plan.current["num_processes"] == 1 and plan.current["num_nodes"] == 2
    assert plan.in_space_pins["num_nodes"] == 2 and plan.global_batch == 16
    for rank, request in enumerate(ranks):
        command, env = launch_command(request, {"micro_batch_size": 4, "num_nodes": 2}, port=31234)
        args = command[3:command.index(str(script))]
        assert env == {"ACCELERATE_USE_CPU": "1"} and "--multi_gpu" in args
        assert args[args.index("--main_process_port") + 1] == "31234" and args.count("--main_process_port") == 1
        assert args[args.index("--rdzv_conf") + 1] == f"is_host={'true' if rank == 0 else 'false'}"
        assert args[args.index("--machine_rank") + 1] == str(rank)
    unpinned = parse(["--autoscout", "--num_machines", "2", "--machine_rank", "1", "--main_process_ip", "10.0.0.1",
                      "--main_process_port", "29500", str(script)])
    command, _ = launch_command(unpinned, {"num_processes": 2, "num_nodes": 2})
    args = command[3:]
    assert args[args.index("--num_processes") + 1] == "4"  # 2 per machine x 2 machines
    assert args[args.index("--main_process_port") + 1] == "29500"  # the real run: the user's port


# ---------------------------------------------------------------- two machines on this one


@pytest.mark.timeout(420)
def test_two_machines_run_every_trial_in_lockstep_and_apply_the_same_winner(script: Path, tmp_path: Path,
                                                                             machines: list[Machine]) -> None:
    port = free_port()
    ours = ["--autoscout-include", "micro_batch_size", "--autoscout-trials", "5", "--autoscout-warmup", "1",
            "--autoscout-measure", "2", "--autoscout-timeout", "120",
            "--autoscout-no-net-gain"]  # every trial of the budget: the net-gain rule may stop early under load
    out = tmp_path / "out.json"
    for rank in (0, 1):
        report = ["--autoscout-report", str(tmp_path / "report")] if rank == 0 else []
        fail = {"TEST_FAIL_MICRO_BATCH": "2"} if rank == 1 else {}  # only machine 1 cannot run micro-batch 2
        machines.append(Machine(tmp_path, rank, [*node_args(rank, port, *ours, *report), str(script), *SCRIPT_ARGS,
                                                 "--out", str(out)], **fail))
    codes = [m.wait(360) for m in machines]
    assert codes == [0, 0], "\n\n".join(m.text[-3000:] for m in machines)
    # Both machines ran the real run with the same config: each machine's process wrote what it used.
    used = [json.loads(p.read_text()) for p in (out, Path(f"{out}.rank1"))]
    assert [u["world_size"] for u in used] == [2, 2]
    assert {(u["micro_batch_size"], u["grad_accum"], u["launch"]) for u in used} == \
        {(used[0]["micro_batch_size"], used[0]["grad_accum"], used[0]["launch"])}
    assert used[0]["micro_batch_size"] * used[0]["grad_accum"] == 8  # the global batch kept: 8 x 2 processes
    # One history row per trial, written by machine rank 0 alone.
    rows = trial_rows(tmp_path / "store0.sqlite")
    report = json.loads((tmp_path / "report.json").read_text())
    assert len(rows) == len(report["trials"]) >= 4
    assert not (tmp_path / "store1.sqlite").exists()
    # The trial machine 1 could not run failed once, named machine 1, and machine 0's part was stopped at
    # once (not at the trial timeout); the search went on.
    failed = [r for r in rows if r["status"] != "ok"]
    assert len(failed) == 1, rows
    assert "machine rank 1" in failed[0]["error"] and "injected failure" in failed[0]["error"]
    assert failed[0]["config"]["micro_batch_size"] == 2 and failed[0]["where"] == "machine rank 1"
    assert failed[0]["cost_s"] < 60
    assert "micro_batch_size=2" not in machines[0].text.split("applied:")[-1]
    # The same command again: machine rank 0 reuses the stored winner with no trial, and both machines apply it.
    for path in (out, Path(f"{out}.rank1")):
        path.unlink()
    again = [Machine(tmp_path / f"again{rank}", rank, [*node_args(rank, port, *ours), str(script), *SCRIPT_ARGS,
                                                       "--out", str(out)],
                     AUTOSCOUT_STORE=str(tmp_path / f"store{rank}.sqlite")) for rank in (0, 1)]
    machines.extend(again)
    assert [m.wait(200) for m in again] == [0, 0], "\n\n".join(m.text[-3000:] for m in again)
    assert len(trial_rows(tmp_path / "store0.sqlite")) == len(rows)
    reused = [json.loads(p.read_text()) for p in (out, Path(f"{out}.rank1"))]
    assert [(u["micro_batch_size"], u["grad_accum"]) for u in reused] == \
        [(used[0]["micro_batch_size"], used[0]["grad_accum"])] * 2


@pytest.mark.timeout(240)
@pytest.mark.parametrize("victim", [1, 0])
def test_a_lost_machine_ends_the_other_within_a_minute_naming_it(victim: int, script: Path, tmp_path: Path,
                                                                 machines: list[Machine]) -> None:
    port = free_port()
    ours = ["--autoscout-include", "micro_batch_size", "--autoscout-trials", "8", "--autoscout-warmup", "1",
            "--autoscout-measure", "400", "--autoscout-timeout", "200"]  # trials long enough to be killed in one
    for rank in (0, 1):
        machines.append(Machine(tmp_path, rank, [*node_args(rank, port, *ours), str(script), *SCRIPT_ARGS,
                                                 "--steps", "100000"]))
    deadline = time.monotonic() + 90
    while not all("joined" in m.text for m in machines) or not leftovers(str(script)):
        assert time.monotonic() < deadline, "\n\n".join(m.text[-2000:] for m in machines)
        assert all(m.proc.poll() is None for m in machines), "\n\n".join(m.text[-2000:] for m in machines)
        time.sleep(0.5)
    time.sleep(3.0)  # inside trial 0, on both machines
    machines[victim].proc.kill()  # the launcher process alone: as when its machine goes away
    killed_at = time.monotonic()
    survivor = machines[1 - victim]
    code = survivor.wait(90)
    took = time.monotonic() - killed_at
    assert code == 1, survivor.text[-3000:]
    assert took < 60 and took < SILENCE_S + 30
    assert f"lost machine rank {victim}" in survivor.text, survivor.text[-3000:]
    deadline = time.monotonic() + 30  # the killed launcher's trial is ended by its supervisor, the survivor's by it
    while leftovers(str(script)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not leftovers(str(script))


@pytest.mark.timeout(120)
def test_an_unreachable_main_machine_is_an_error_not_a_one_machine_run(script: Path, tmp_path: Path,
                                                                       machines: list[Machine]) -> None:
    port = free_port()
    machines.append(Machine(tmp_path, 1, [*node_args(1, port, "--autoscout-join-timeout", "3"), str(script),
                                          *SCRIPT_ARGS]))
    assert machines[0].wait(60) == 1
    text = machines[0].text
    assert f"the main node 127.0.0.1:{port} (machine rank 0) cannot be reached" in text, text[-2000:]
    assert not leftovers(str(script))


@pytest.mark.timeout(120)
def test_machines_running_different_commands_are_refused(script: Path, tmp_path: Path,
                                                         machines: list[Machine]) -> None:
    port = free_port()
    for rank, steps in ((0, "30"), (1, "31")):
        machines.append(Machine(tmp_path, rank, [*node_args(rank, port, "--autoscout-join-timeout", "60"),
                                                 str(script), *SCRIPT_ARGS, "--steps", steps]))
    assert [m.wait(60) for m in machines] == [1, 1]
    assert "runs another command than machine rank 0" in machines[0].text
    assert "machine rank 0 refused this node" in machines[1].text


def test_processes_per_machine_are_tuned_the_machine_count_is_not(script: Path, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from autoscout_plugin.integrations.accelerate import AutoScoutLauncher

    from autoscout_plugin.costmodel import Hardware

    monkeypatch.setenv("AUTOSCOUT_STORE", str(tmp_path / "store.sqlite"))
    request = parse(["--autoscout", "--num_machines", "2", "--machine_rank", "0", "--main_process_ip", "127.0.0.1",
                     "--main_process_port", "29500", str(script)])
    launcher = AutoScoutLauncher(request, Hardware(kind="cpu", cores=2), 2)
    plan = make_plan(request, {"micro_batch_size": 8, "grad_accum": 1}, physical_cores=2)
    assert "num_processes" in plan.tunable and "strategy" not in plan.tunable and plan.strategies == ("ddp",)
    tuning = launcher._tuning(plan, "job")
    assert tuning.space["num_nodes"].choices == (2,) and tuning.space["strategy"].choices == ("ddp",)
    assert tuning.space["num_processes"].choices == (1, 2)  # per machine, within its 2 cores
    assert tuning.baseline is not None and tuning.baseline["num_nodes"] == 2  # your own config is in the space
    rng = random.Random(0)
    for config in (tuning.space.sample(rng) for _ in range(20)):
        split = tuning.run_description.split.for_config(config)
        # 8 per process x 2 machines, whatever runs per machine: the accumulation counts every machine's processes
        assert split.per_process * config["num_processes"] * config["num_nodes"] == 16
