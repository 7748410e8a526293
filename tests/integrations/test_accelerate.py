"""`autoscout launch --autoscout`: the command line (pins, pass-through, validation) against accelerate's
own parser, and real launches of real scripts: a two-process CPU job tuned end to end, warm start,
faults, and scripts that use the API wrongly."""

from __future__ import annotations

import json
import socket
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from accelerate.commands.launch import launch_command_parser
from autoscout_plugin.integrations import accelerate as launcher_module
from autoscout_plugin.integrations._accelerate_args import (
    LaunchError,
    current_config,
    launch_command,
    make_plan,
    parse,
    pinned,
)
from autoscout_plugin.integrations.accelerate import AutoScoutLauncher, main

from autoscout_plugin.batch import BatchSplit
from autoscout_plugin.costmodel import Hardware
from autoscout_plugin.trial import Fidelity

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "accelerate_loop.py"
CPU2 = Hardware(kind="cpu", cores=2, bf16=True)


@pytest.fixture(autouse=True)
def _isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTOSCOUT_STORE", str(tmp_path / "store.sqlite"))
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # no accelerate config file of the machine's user
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    for name in ("AUTOSCOUT_LAUNCH", "AUTOSCOUT_DECLARED", "OMP_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def script(tmp_path: Path) -> Path:
    path = tmp_path / "train.py"
    path.write_text("print('hi')\n")
    return path


def flags_after(command: list[str], script: Path) -> list[str]:
    """The accelerate options of a built command (between the module and the script)."""
    return command[3:command.index(str(script))]


# ---------------------------------------------------------------- the command line


@pytest.mark.parametrize("tokens", [["--num_processes", "2"], ["--num-processes", "2"], ["--num_processes=2"],
                                    ["--num-processes=2"]])
def test_an_explicit_process_count_is_pinned_in_either_spelling(tokens: list[str], script: Path) -> None:
    request = parse(["--autoscout", *tokens, str(script)])
    assert set(pinned(request.namespace, request.given)) == {"strategy", "num_processes"}
    plan = make_plan(request, {"micro_batch_size": 8}, physical_cores=2)
    assert "num_processes" not in plan.tunable and "strategy" not in plan.tunable
    assert {"precision", "compile", "num_threads", "micro_batch_size"} <= set(plan.tunable)
    assert plan.global_batch == 16 and plan.per_process_batch == 8  # 8 per process x the 2 pinned processes
    # A trial's flags never repeat or override it: the user's tokens are first and unchanged.
    command, env = launch_command(request, {"num_threads": 1, "precision": "bf16-mixed"})
    args = flags_after(command, script)
    assert args[:len(tokens)] == tokens and "--num_processes" not in args[len(tokens):]
    assert env == {"ACCELERATE_USE_CPU": "1"} and "--multi_gpu" in args


@pytest.mark.parametrize(("tokens", "knob"), [
    (["--mixed_precision", "bf16"], "precision"), (["--mixed-precision=no"], "precision"),
    (["--dynamo-backend", "inductor"], "compile"), (["--dynamo_backend=no"], "compile"),
    (["--num_cpu_threads_per_process", "1"], "num_threads"), (["--num-cpu-threads-per-process=2"], "num_threads"),
    (["--multi_gpu"], "strategy"),
])
def test_every_explicit_launcher_option_is_pinned(tokens: list[str], knob: str, script: Path) -> None:
    request = parse(["--autoscout", *tokens, str(script)])
    plan = make_plan(request, {"micro_batch_size": 8}, physical_cores=2)
    assert knob in plan.pinned and knob not in plan.tunable
    assert tokens[0].split("=")[0][2:].replace("-", "_") in plan.pinned[knob]  # the reason names the option


def test_unknown_accelerate_args_and_script_args_pass_through_untouched(script: Path) -> None:
    user = ["--main_process_port", "29577", "--num_machines", "1", "--debug", "--rdzv_conf", "a=1,b=2"]
    mine = ["--autoscout", "--autoscout-trials", "3", "--autoscout_timeout=30"]
    script_args = ["--lr", "0.1", "--autoscout-trials", "9", "--cpu"]  # after the script: the script's own
    request = parse([mine[0], *user[:4], *mine[1:3], *user[4:], mine[3], str(script), *script_args])
    assert request.accelerate_args == tuple(user)
    assert request.script_args == tuple(script_args)
    assert request.options.max_trials == 3 and request.options.trial_timeout_s == 30
    command, _ = launch_command(request, {"strategy": "ddp", "num_processes": 2, "num_threads": 1}, port=31111)
    args = flags_after(command, script)
    assert args[:len(user)] == user
    assert "31111" not in args  # the user chose the port: no other is added
    assert command[-len(script_args):] == script_args
    # accelerate's own parser reads the built command back as intended
    ns = launch_command_parser().parse_args(command[3:])
    assert (ns.num_processes, ns.multi_gpu, ns.main_process_port, ns.rdzv_conf) == (2, True, 29577, "a=1,b=2")
    assert ns.training_script_args == script_args


def test_several_cpu_processes_run_as_multi_gpu_with_use_cpu(script: Path) -> None:
    request = parse(["--autoscout", "--cpu", str(script)])
    command, env = launch_command(request, {"strategy": "ddp", "num_processes": 2}, port=31112)
    args = flags_after(command, script)
    assert "--cpu" not in args and "--multi_gpu" in args and env == {"ACCELERATE_USE_CPU": "1"}
    assert args[args.index("--main_process_port") + 1] == "31112"
    command, env = launch_command(request, {"strategy": "single", "num_processes": 1}, port=31112)
    assert flags_after(command, script) == ["--cpu", "--num_processes", "1"] and env == {}


@pytest.mark.parametrize(("config", "gpu", "expected"), [
    ({"precision": "bf16-mixed"}, False, ["--mixed_precision", "bf16"]),
    ({"precision": "32-true"}, False, ["--mixed_precision", "no"]),
    ({"compile": "default"}, False, ["--dynamo_backend", "inductor"]),
    ({"compile": "max-autotune"}, True, ["--dynamo_backend", "inductor", "--dynamo_mode", "max-autotune"]),
    ({"compile": "off"}, False, ["--dynamo_backend", "no"]),
    ({"num_threads": 2}, False, ["--num_cpu_threads_per_process", "2"]),
    ({"strategy": "ddp", "num_processes": 4}, True, ["--num_processes", "4", "--multi_gpu"]),
    ({"strategy": "fsdp", "num_processes": 2, "fsdp_reshard_after_forward": False, "cpu_offload": True}, True,
     ["--num_processes", "2", "--use_fsdp", "--fsdp_version", "2", "--fsdp_reshard_after_forward", "false",
      "--fsdp_offload_params", "true"]),
])
def test_launcher_knobs_become_accelerate_flags(config: dict[str, Any], gpu: bool, expected: list[str],
                                                script: Path) -> None:
    request = parse(["--autoscout", str(script)])
    command, env = launch_command(request, config, gpu=gpu)
    assert flags_after(command, script) == expected
    assert env == {}  # GPUs, or one CPU process: no ACCELERATE_USE_CPU
    ns = launch_command_parser().parse_args(command[3:])  # accelerate accepts them
    assert ns.training_script == str(script)


def test_accelerate_defaults_are_the_users_own_settings(script: Path) -> None:
    plain = parse([str(script)]).namespace
    assert current_config(plain, physical_cores=8, env={}) == {
        "strategy": "single", "num_processes": 1, "precision": "32-true", "compile": "off", "num_threads": 1}
    assert current_config(plain, physical_cores=8, env={"OMP_NUM_THREADS": "3"})["num_threads"] == 3
    cpu = parse(["--cpu", "--num_processes", "2", str(script)]).namespace
    assert current_config(cpu, physical_cores=8, env={})["num_threads"] == 4  # accelerate: cores / processes
    fp8 = parse(["--mixed_precision", "fp8", "--dynamo_backend", "eager", str(script)]).namespace
    assert "precision" not in current_config(fp8, env={}) and "compile" not in current_config(fp8, env={})


def test_the_plan_follows_the_knobs_the_script_declared(script: Path) -> None:
    request = parse(["--autoscout", str(script)])
    plan = make_plan(request, {"micro_batch_size": 8, "grad_accum": 2, "num_workers": 0, "lr": 0.1,
                               "pin_memory": "yes"}, physical_cores=2)
    assert plan.global_batch == 16 and plan.current["micro_batch_size"] == 8
    assert {"strategy", "num_processes", "micro_batch_size", "num_workers"} <= set(plan.tunable)
    assert "not a catalogue knob" in plan.ignored["lr"] and "not a valid pin_memory" in plan.ignored["pin_memory"]
    assert not {"fsdp_reshard_after_forward", "cpu_offload"} & set(plan.tunable)  # no GPU here
    assert plan.split() == BatchSplit(16, 8, 2, 1)
    space = AutoScoutLauncher(request, CPU2, 2)._tuning(plan, "job").space
    ddp = space.canonical({**plan.current, "strategy": "ddp", "num_processes": 2, "micro_batch_size": 4})
    assert space.derived(ddp) == {"grad_accum": 2}  # 4 x 2 x 2 processes = the user's 8 x 2 x 1
    assert plan.split().for_config(ddp).grad_accum == 2

    bare = make_plan(request, {"num_workers": 0}, physical_cores=2)
    assert "knob('micro_batch_size')" in bare.pinned["num_processes"] and "num_processes" not in bare.tunable
    assert bare.global_batch is None


def test_on_several_gpus_fsdp_is_an_arm_with_its_own_options(script: Path) -> None:
    # No GPU here: the space and the commands are checked, not run (accelerate's FSDP needs GPUs).
    gpus = Hardware(kind="gpu", gpus=4, cores=16, bf16=True)
    request = parse(["--autoscout", str(script)], gpu=True)
    launcher = AutoScoutLauncher(request, gpus, 16)
    plan = launcher.plan = make_plan(request, {"micro_batch_size": 8}, gpus=4, physical_cores=16)
    assert plan.current["num_processes"] == 4 and plan.global_batch == 32  # accelerate's default: every GPU
    space = launcher._tuning(plan, "job").space
    assert set(space["strategy"].choices) == {"single", "ddp", "fsdp"}
    fsdp = space.canonical({**plan.current, "strategy": "fsdp", "num_processes": 4, "micro_batch_size": 8,
                            "fsdp_reshard_after_forward": False, "cpu_offload": False, "precision": "16-mixed"})
    assert space.is_feasible(fsdp)
    command, env = launch_command(request, fsdp, gpu=True)
    ns = launch_command_parser().parse_args(command[3:])
    assert (ns.use_fsdp, ns.fsdp_version, ns.fsdp_reshard_after_forward, ns.mixed_precision) == (True, "2", "false",
                                                                                               "fp16")
    assert not ns.multi_gpu and env == {}
    single = space.canonical({k: v for k, v in fsdp.items() if k not in ("fsdp_reshard_after_forward", "cpu_offload")}
                             | {"strategy": "single", "num_processes": 1})
    assert not {"--use_fsdp", "--fsdp_reshard_after_forward"} & set(launch_command(request, single, gpu=True)[0])


def test_own_settings_outside_the_space_are_no_baseline(script: Path, monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "4")  # accelerate passes it on: 4 threads on 2 cores
    request = parse(["--autoscout", str(script)])
    launcher = AutoScoutLauncher(request, CPU2, 2)
    plan = make_plan(request, {"micro_batch_size": 8}, physical_cores=2)
    assert plan.current["num_threads"] == 4
    assert launcher._tuning(plan, "job").baseline is None
    assert "your own settings are outside the space" in capsys.readouterr().err
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    plan = make_plan(request, {"micro_batch_size": 8}, physical_cores=2)
    assert launcher._tuning(plan, "job").baseline["num_threads"] == 2


def test_a_config_needing_accumulation_the_script_does_not_read_is_not_run(script: Path) -> None:
    request = parse(["--autoscout", "--autoscout-include", "micro_batch_size", str(script)])
    launcher = AutoScoutLauncher(request, CPU2, 2)
    launcher.plan = make_plan(request, {"micro_batch_size": 8}, physical_cores=2)
    tuning = launcher._tuning(launcher.plan, "job")
    outcome = launcher._unrunnable(tuning.request({"micro_batch_size": 2}, Fidelity.F2))
    assert outcome is not None and outcome.status == "invalid" and "grad_accum=4" in outcome.error
    assert launcher._unrunnable(tuning.request({"micro_batch_size": 8}, Fidelity.F2)) is None


@pytest.mark.parametrize(("args", "message"), [
    (["--autoscout", "--autoscout-trials", "0", "{script}"], "--autoscout-trials 0: give a positive number"),
    (["--autoscout", "--autoscout-timeout", "-5", "{script}"], "--autoscout-timeout -5.0: give a positive"),
    (["--autoscout", "--autoscout-measure", "0", "{script}"], "--autoscout-measure 0"),
    (["--autoscout", "--autoscout-include", "num_procs", "{script}"], "unknown knob 'num_procs'"),
    (["--autoscout", "--autoscout-include", "grad_accum", "{script}"], "grad_accum: it follows from the global"),
    (["--autoscout", "--autoscout-include", ",", "{script}"], "names no knob"),
    (["--autoscout", "--autoscout-include", "cpu_offload", "{script}"], "FSDP options need a GPU"),
    (["--autoscout", "--num-processes=2", "--autoscout-include", "num_processes", "{script}"],
     "pinned by --num_processes 2"),
    (["--autoscout", "missing.py"], "script 'missing.py' not found"),
    (["--autoscout-trials", "3", "{script}"], "--autoscout-trials has no effect without --autoscout"),
    (["--autoscout", "--num_machines", "2", "{script}"], "--num_machines 2: give each machine its --machine_rank"),
])
def test_a_bad_option_is_refused_before_anything_launches(args: list[str], message: str, script: Path,
                                                          monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    def no_launch(*a: Any, **k: Any) -> None:
        raise AssertionError("something was launched")

    monkeypatch.setattr(launcher_module, "run_supervised", no_launch)
    monkeypatch.setattr(launcher_module, "run_subprocess_trial", no_launch)
    assert main([a.format(script=script) for a in args]) == 2
    assert message in capsys.readouterr().err


def test_a_typo_in_an_accelerate_option_is_reported_by_accelerates_parser(script: Path,
                                                                          capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--autoscout", "--num_proceses", "2", str(script)])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "autoscout launch: error: unrecognized arguments: --num_proceses" in err


# ---------------------------------------------------------------- real launches

RECORDER = """
import json, os, sys, time
from pathlib import Path
import autoscout_plugin as autoscout

out = Path(sys.argv[1] + "." + os.environ.get("RANK", "0"))
batch = autoscout.knob("micro_batch_size", 8)
accum = autoscout.knob("grad_accum", 1)
spec = autoscout.launch_spec() or {}
trial = spec.get("mode") == "trial"
precision, threads = os.environ.get("ACCELERATE_MIXED_PRECISION"), os.environ.get("OMP_NUM_THREADS")
if trial and "crash-bf16" in sys.argv and precision == "bf16":
    raise SystemExit("crash: a bf16 trial")
if trial and "hang-2-threads" in sys.argv and threads == "2":
    time.sleep(600)
if trial and "fail-all" in sys.argv:
    raise RuntimeError("every trial fails")
if trial and "sleep-forever" in sys.argv:
    time.sleep(600)
for _ in range(int(sys.argv[2])):
    time.sleep(0.02)
    if "no-step" not in sys.argv:
        autoscout.step()
out.write_text(json.dumps({"mode": spec.get("mode"), "precision": precision, "threads": threads, "argv": sys.argv[1:],
                           "micro_batch_size": batch, "grad_accum": accum, "world": os.environ.get("WORLD_SIZE"),
                           "port": os.environ.get("MASTER_PORT")}))
"""


@pytest.fixture
def recorder(tmp_path: Path) -> Path:
    path = tmp_path / "recorder.py"
    path.write_text(textwrap.dedent(RECORDER))
    return path


def read_out(tmp_path: Path, rank: int = 0) -> dict[str, Any]:
    return json.loads((tmp_path / f"out.{rank}").read_text())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


QUICK = ["--autoscout-warmup", "1", "--autoscout-measure", "2", "--autoscout-no-net-gain"]


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_without_autoscout_it_is_accelerate_launch(tmp_path: Path, recorder: Path) -> None:
    assert main(["--num_machines", "1", "--num_cpu_threads_per_process", "2", str(recorder), str(tmp_path / "out"),
                 "3", "--flag"]) == 0
    out = read_out(tmp_path)
    assert out["mode"] is None and out["threads"] == "2" and out["argv"][-2:] == ["3", "--flag"]


@pytest.mark.slow
@pytest.mark.timeout(900)  # about 45 s on a quiet 2-core machine
def test_a_two_process_cpu_job_is_tuned_then_run_with_the_winner_then_reused(
        tmp_path: Path, capfd: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out.json"
    report = tmp_path / "report"
    argv = ["--autoscout", "--autoscout-trials", "3", "--autoscout-confirm", "0", *QUICK,
            "--autoscout-include", "strategy,num_processes,num_threads", "--autoscout-report", str(report),
            "--num_machines", "1", str(EXAMPLE), "--steps", "8", "--width", "128", "--micro-batch", "8",
            "--accum", "2", "--out", str(out), "--samples", "512"]
    assert main(argv) == 0
    err = capfd.readouterr().err
    data = json.loads(report.with_suffix(".json").read_text())
    trials = {(t["config"]["num_processes"], t["config"]["num_threads"]): t for t in data["trials"]}
    # the three configs of this space, each measured once: one process x 1 or 2 threads, two processes
    assert set(trials) == {(1, 1), (1, 2), (2, 1)} and all(t["status"] == "ok" for t in trials.values())
    best = data["best_config"]
    summary = json.loads(out.read_text())
    assert summary["launch"] == "apply" and summary["world_size"] == best["num_processes"]
    assert summary["threads"] == best["num_threads"] and summary["steps"] == 8
    # micro-batch x accumulation x processes is still the user's 8 x 2 x 1
    assert summary["micro_batch_size"] * summary["grad_accum"] * summary["world_size"] == 16
    assert summary["argv"] == argv[argv.index(str(EXAMPLE)) + 1:]  # the script's arguments, as given
    assert "real run: accelerate launch --num_machines 1 --num_processes" in err
    assert data["notes"]["tuned"] == ["strategy", "num_processes", "num_threads"]

    out.unlink()
    assert main(argv) == 0  # the same command again: the stored winner, no trial
    err = capfd.readouterr().err
    assert "reused the stored winner for this command and machine (0 trials)" in err
    assert "#0" not in err
    again = json.loads(out.read_text())
    assert (again["world_size"], again["threads"], again["launch"]) == (best["num_processes"], best["num_threads"],
                                                                         "apply")


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_crashing_and_hanging_trials_are_survived(tmp_path: Path, recorder: Path,
                                                  capfd: pytest.CaptureFixture[str]) -> None:
    # Every trial is a real `accelerate launch` (about 3 s on a quiet machine, torch imported): the limit
    # leaves the trial that does not hang room on a slow, loaded one; the hanging one sleeps 600 s.
    argv = ["--autoscout", "--autoscout-trials", "4", "--autoscout-timeout", "30", *QUICK,
            "--autoscout-include", "precision,num_threads", "--autoscout-report", str(tmp_path / "report"),
            str(recorder), str(tmp_path / "out"), "20", "crash-bf16", "hang-2-threads"]
    assert main(argv) == 0
    data = json.loads((tmp_path / "report.json").read_text())
    status = {(t["config"]["precision"], t["config"]["num_threads"], t["fidelity"]): t["status"]
              for t in data["trials"]}
    assert status[("bf16-mixed", 1, "F2")] == status[("bf16-mixed", 2, "F2")] == "error"
    assert status[("32-true", 2, "F2")] == "timeout"
    assert status[("32-true", 1, "F2")] == "ok"
    assert not any(t["fidelity"] == "F3" for t in data["trials"])  # nothing ran better: nothing to confirm
    out = read_out(tmp_path)
    assert (out["mode"], out["precision"], out["threads"]) == ("apply", "no", "1")
    assert "timeout" in capfd.readouterr().err
    assert running_with(str(recorder)) == []  # the hung trial's processes are gone, not orphaned


def running_with(text: str, within_s: float = 30.0) -> list[int]:
    """Live processes whose command line contains `text`, once none are left or after `within_s`: a process
    being killed can take a moment to go on a loaded machine; an orphan (the hung trial sleeps 600 s) stays."""
    deadline = time.monotonic() + within_s
    while True:
        found = []
        for entry in Path("/proc").iterdir():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
                state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
            except (OSError, IndexError):
                continue
            if text in cmdline and state not in ("Z", "X"):
                found.append(int(entry.name))
        if not found or time.monotonic() >= deadline:
            return found
        time.sleep(0.1)


@pytest.mark.slow
@pytest.mark.timeout(300)  # about 10 s on a quiet 2-core machine: three `accelerate launch`es
def test_when_every_trial_fails_the_real_run_uses_your_own_settings(tmp_path: Path, recorder: Path) -> None:
    argv = ["--autoscout", "--autoscout-trials", "2", *QUICK, "--autoscout-include", "num_threads",
            "--num_processes", "1", str(recorder), str(tmp_path / "out"), "5", "fail-all"]
    with pytest.warns(RuntimeWarning, match="every trial failed; the real run uses your own settings"):
        assert main(argv) == 0
    out = read_out(tmp_path)
    assert out["mode"] is None and out["threads"] == "1"  # the plain command: no AUTOSCOUT_LAUNCH


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize(("extra", "timeout", "ran"), [
    # It ends on its own in a few seconds (a real `accelerate launch`): a limit it never reaches, however slow
    # and loaded the machine.
    (["no-step"], "200", "to its end"),
    # It sleeps for 600 s: whatever the machine, the limit is what ends it.
    (["no-step", "sleep-forever"], "6", "for 6 s"),
])
def test_a_script_that_never_marks_a_step_gets_a_clear_error(extra: list[str], timeout: str, ran: str, tmp_path: Path,
                                                             recorder: Path, capfd: pytest.CaptureFixture[str]) -> None:
    argv = ["--autoscout", "--autoscout-timeout", timeout, *QUICK, str(recorder), str(tmp_path / "out"), "3", *extra]
    assert main(argv) == 2
    err = capfd.readouterr().err
    assert f"ran {ran} in its first trial without calling autoscout_plugin.step(): mark each optimizer step" in err
    assert "real run" not in err


# ---------------------------------------------------------------- accelerate's config file
def config_file(tmp_path: Path, name: str = "accelerate.yaml", **settings: Any) -> Path:
    """An accelerate config file as `accelerate config` writes one, at accelerate's defaults but for
    `settings`."""
    base: dict[str, Any] = {"compute_environment": "LOCAL_MACHINE", "debug": False, "distributed_type": "NO",
                            "downcast_bf16": "no", "machine_rank": 0, "main_training_function": "main",
                            "mixed_precision": "no", "num_machines": 1, "num_processes": 1, "rdzv_backend": "static",
                            "same_network": True, "use_cpu": True}
    path = tmp_path / name
    path.write_text(json.dumps(base | settings) if name.endswith(".json") else "\n".join(
        f"{k}: {json.dumps(v)}" for k, v in (base | settings).items()) + "\n")
    return path


def test_settings_from_an_accelerate_config_file_are_pinned_like_flags(tmp_path: Path, script: Path) -> None:
    path = config_file(tmp_path, mixed_precision="bf16",
                       dynamo_config={"dynamo_backend": "INDUCTOR", "dynamo_mode": "max-autotune"})
    request = parse(["--autoscout", "--config_file", str(path), str(script)])
    assert request.config_pins == {"precision": f"accelerate config file {path} (mixed_precision: bf16)",
                                   "compile": f"accelerate config file {path} (dynamo_backend: inductor)"}
    plan = make_plan(request, {}, physical_cores=2)
    # the user's own config is what the file gives, and the file's knobs are not tuned
    assert (plan.current["precision"], plan.current["compile"]) == ("bf16-mixed", "max-autotune")
    assert not {"precision", "compile"} & set(plan.tunable) and "num_threads" in plan.tunable
    assert plan.pinned["precision"].startswith("accelerate config file")
    command, _ = launch_command(request, {"num_threads": 2})
    flags = flags_after(command, script)
    assert flags == ["--config_file", str(path), "--num_cpu_threads_per_process", "2"]  # accelerate reads the file
    # a flag on the command line beats the file, as in accelerate
    flagged = make_plan(parse(["--autoscout", "--config_file", str(path), "--mixed_precision", "no", str(script)]), {},
                        physical_cores=2)
    assert flagged.current["precision"] == "32-true" and flagged.pinned["precision"] == "--mixed_precision no"
    with pytest.raises(LaunchError, match=r"'precision' is listed in --autoscout-include but pinned by accelerate"
                                          r" config file"):
        parse(["--autoscout", "--autoscout-include", "precision", "--config_file", str(path), str(script)])


def test_a_config_file_at_accelerates_defaults_leaves_every_knob_tunable(tmp_path: Path, script: Path) -> None:
    path = config_file(tmp_path, "defaults.json", dynamo_config={})
    request = parse(["--autoscout", "--config_file", str(path), str(script)])
    assert request.config_pins == {} and request.config_file == str(path)
    assert {"strategy", "num_processes", "precision", "compile", "num_threads"} <= set(
        make_plan(request, {"micro_batch_size": 8}, physical_cores=2).tunable)


def test_the_default_config_file_is_read_unless_cpu_and_a_multi_gpu_one_pins_the_processes(
        tmp_path: Path, script: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = config_file(tmp_path, distributed_type="MULTI_GPU", num_processes=4, use_cpu=False)
    monkeypatch.setattr("accelerate.commands.config.default_config_file", str(path))
    request = parse(["--autoscout", str(script)])
    assert request.config_file == str(path)
    assert request.config_pins["num_processes"] == f"accelerate config file {path} (distributed_type: MULTI_GPU)"
    plan = make_plan(request, {"micro_batch_size": 8}, gpus=4, physical_cores=2)
    assert (plan.current["strategy"], plan.current["num_processes"]) == ("ddp", 4)
    assert not {"strategy", "num_processes"} & set(plan.tunable)
    assert parse(["--autoscout", "--cpu", str(script)]).config_pins == {}  # accelerate skips it under --cpu


def test_an_unreadable_config_file_is_refused_and_its_content_is_part_of_the_job(tmp_path: Path,
                                                                                 script: Path) -> None:
    broken = tmp_path / "broken.yaml"
    broken.write_text("mixed_precision: [bf16\n")
    with pytest.raises(LaunchError, match=f"cannot read the accelerate config file {broken}"):
        parse(["--autoscout", "--config_file", str(broken), str(script)])
    path = config_file(tmp_path, mixed_precision="no")
    before = parse(["--autoscout", "--config_file", str(path), str(script)]).job_id()
    config_file(tmp_path, mixed_precision="bf16")  # the same file, edited: a stored winner is not reused
    assert parse(["--autoscout", "--config_file", str(path), str(script)]).job_id() != before


def test_the_same_script_in_another_folder_is_the_same_job_and_an_edit_is_not(tmp_path: Path, script: Path) -> None:
    """Two machines sharing a store keep the project in different folders (/home/alice, /home/bob)."""
    elsewhere = tmp_path / "bob" / "project" / script.name
    elsewhere.parent.mkdir(parents=True)
    elsewhere.write_bytes(script.read_bytes())
    assert parse(["--autoscout", str(elsewhere)]).job_id() == parse(["--autoscout", str(script)]).job_id()
    elsewhere.write_text(script.read_text() + "\n# edited\n")
    assert parse(["--autoscout", str(elsewhere)]).job_id() != parse(["--autoscout", str(script)]).job_id()
    renamed = elsewhere.with_name("other.py")
    renamed.write_bytes(script.read_bytes())
    assert parse(["--autoscout", str(renamed)]).job_id() != parse(["--autoscout", str(script)]).job_id()


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_a_real_launch_keeps_the_config_files_precision_in_trials_and_run(tmp_path: Path, recorder: Path) -> None:
    path = config_file(tmp_path, mixed_precision="bf16")
    argv = ["--autoscout", "--autoscout-trials", "2", "--autoscout-confirm", "0", *QUICK,
            "--autoscout-report", str(tmp_path / "report"), "--config_file", str(path), str(recorder),
            str(tmp_path / "out"), "6"]
    assert main(argv) == 0
    data = json.loads((tmp_path / "report.json").read_text())
    assert [t["status"] for t in data["trials"]] == ["ok", "ok"]
    assert all("precision" not in t["config"] for t in data["trials"])
    assert data["notes"]["pinned"]["precision"] == f"accelerate config file {path} (mixed_precision: bf16)"
    out = read_out(tmp_path)
    assert (out["mode"], out["precision"]) == ("apply", "bf16")  # accelerate applied the file's bf16


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_pinned_cpu_processes_run_as_two_processes_with_the_users_port(tmp_path: Path, recorder: Path) -> None:
    # `--cpu --num_processes 2` alone starts one process in accelerate; here both trials and the real
    # run have two, and the user's --main_process_port reaches them.
    port = str(free_port())
    argv = ["--autoscout", "--autoscout-trials", "2", "--autoscout-confirm", "0", *QUICK,
            "--autoscout-report", str(tmp_path / "report"), "--cpu", "--num_processes", "2",
            "--main_process_port", port, "--autoscout-include", "precision", str(recorder), str(tmp_path / "out"),
            "6"]
    assert main(argv) == 0
    data = json.loads((tmp_path / "report.json").read_text())
    assert [t["status"] for t in data["trials"]] == ["ok", "ok"]
    assert data["notes"]["pinned"]["num_processes"] == "--num_processes 2"
    for rank in (0, 1):
        out = read_out(tmp_path, rank)
        assert (out["mode"], out["world"], out["port"]) == ("apply", "2", port)
        assert out["precision"] == {"32-true": "no", "bf16-mixed": "bf16"}[data["best_config"]["precision"]]


def test_the_launcher_module_runs_under_the_cli(monkeypatch: pytest.MonkeyPatch) -> None:
    from autoscout_plugin import cli

    seen: list[list[str]] = []
    monkeypatch.setattr(launcher_module, "main", lambda argv: seen.append(list(argv)) or 7)
    assert cli.main(["launch", "--autoscout", "--num_processes", "2", "x.py", "--a"]) == 7
    assert seen == [["--autoscout", "--num_processes", "2", "x.py", "--a"]]  # every argument, as given
