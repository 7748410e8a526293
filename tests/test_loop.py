"""`knob()`, `step()` and `launch_spec()`: the custom-loop API, in this process (a fake clock for the
probe) and in child processes, where a finished trial really ends the process."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from autoscout_plugin import knob, launch_spec, loop, step
from autoscout_plugin.loop import DECLARED_ENV, LAUNCH_ENV, stepped_marker
from autoscout_plugin.loop import ScriptProbe as Probe
from autoscout_plugin.profiling import RESULT_ENV


@pytest.fixture(autouse=True)
def _fresh(monkeypatch: pytest.MonkeyPatch) -> Any:
    for name in (LAUNCH_ENV, DECLARED_ENV, RESULT_ENV, "RANK", "WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    loop._reset()
    yield
    loop._reset()


def trial_spec(**overrides: Any) -> dict[str, Any]:
    return {"mode": "trial", "config": {}, "warmup": 1, "measure": 2, "cut_off": None, "global_batch": None} | overrides


def set_spec(monkeypatch: pytest.MonkeyPatch, spec: dict[str, Any]) -> None:
    monkeypatch.setenv(LAUNCH_ENV, json.dumps(spec))


class Clock:
    """A clock the test moves: each reading advances it by the next step's duration."""

    def __init__(self, durations: list[float]) -> None:
        self.now, self.durations = 0.0, list(durations)

    def __call__(self) -> float:
        if self.durations:
            self.now += self.durations.pop(0)
        return self.now


# ---------------------------------------------------------------- knob and launch_spec


def test_outside_the_launcher_knob_returns_the_default_and_step_does_nothing() -> None:
    assert launch_spec() is None
    assert knob("micro_batch_size", 32) == 32
    assert knob("anything", {"a": 1}) == {"a": 1}
    for _ in range(1000):
        step(32, loss=float("nan"))  # not a trial: no NaN check, no exit
    assert loop._state == {"probe": None}


@pytest.mark.parametrize("name", [None, 3, "", b"micro_batch_size"])
def test_knob_needs_a_name(name: Any) -> None:
    with pytest.raises(TypeError, match="knob\\(\\) needs a knob name"):
        knob(name, 1)


@pytest.mark.parametrize("mode", ["trial", "apply"])
def test_knob_returns_the_launchers_value(monkeypatch: pytest.MonkeyPatch, mode: str) -> None:
    set_spec(monkeypatch, trial_spec(mode=mode, config={"micro_batch_size": 8, "grad_accum": 4}))
    assert knob("micro_batch_size", 32) == 8
    assert knob("grad_accum", 1) == 4
    assert knob("num_workers", 2) == 2  # not in the config: the script's default


@pytest.mark.parametrize(("text", "match"), [
    ("{not json", "AUTOSCOUT_LAUNCH is not valid JSON"),
    ("[1, 2]", "AUTOSCOUT_LAUNCH must hold a JSON object"),
    ('{"mode": "tune"}', "mode must be one of"),
    ('{"mode": "trial", "config": [], "warmup": 1, "measure": 2}', "config must be an object"),
    ('{"mode": "trial", "config": {}, "warmup": 1}', "measure must be an integer >= 1, got None"),
    ('{"mode": "trial", "config": {}, "warmup": -1, "measure": 2}', "warmup must be an integer >= 0, got -1"),
    ('{"mode": "trial", "config": {}, "warmup": 1, "measure": 2, "cut_off": 0}', "cut_off must be a positive"),
    ('{"mode": "apply", "global_batch": 2.5}', "global_batch must be a positive integer or null, got 2.5"),
])
def test_a_bad_spec_is_a_clear_error_naming_the_variable(monkeypatch: pytest.MonkeyPatch, text: str,
                                                         match: str) -> None:
    monkeypatch.setenv(LAUNCH_ENV, text)
    with pytest.raises(ValueError, match=match) as info:
        knob("micro_batch_size", 32)
    assert LAUNCH_ENV in str(info.value)


def test_an_apply_spec_needs_no_step_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(LAUNCH_ENV, json.dumps({"mode": "apply", "config": {"num_workers": 1}}))
    assert launch_spec() == {"mode": "apply", "config": {"num_workers": 1}, "warmup": 0, "measure": 0,
                             "cut_off": None, "best": None, "precision": None, "max_measure": None,
                             "global_batch": None}


def test_a_trial_records_the_declared_knobs_on_rank_zero(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    declared = tmp_path / "declared.json"
    monkeypatch.setenv(DECLARED_ENV, str(declared))
    set_spec(monkeypatch, trial_spec(config={"micro_batch_size": 4}))
    knob("micro_batch_size", 32)
    knob("grad_accum", 1)
    knob("dtype", object())  # not JSON: recorded by its repr, for the report
    knob("micro_batch_size", 64)  # read again: the first default stays
    data = json.loads(declared.read_text())
    assert data["micro_batch_size"] == 32 and data["grad_accum"] == 1 and data["dtype"].startswith("<object")
    assert not list(tmp_path.glob("*.partial"))

    loop._reset()
    declared.unlink()
    monkeypatch.setenv("RANK", "1")
    knob("micro_batch_size", 32)
    assert not declared.exists()


def test_describe_hands_the_model_to_the_launcher_on_rank_zero_only(monkeypatch: pytest.MonkeyPatch,
                                                                    tmp_path: Path) -> None:
    declared = tmp_path / "declared.json"
    loop.describe({"family": "transformer"})  # not under the launcher: nothing written anywhere
    assert not list(tmp_path.iterdir())
    monkeypatch.setenv(DECLARED_ENV, str(declared))
    loop.describe({"family": "transformer", "n_layer": 2})
    assert json.loads(loop.workload_file(declared).read_text()) == {"family": "transformer", "n_layer": 2}
    loop.workload_file(declared).unlink()
    monkeypatch.setenv("RANK", "1")
    loop.describe({"family": "transformer"})
    assert not loop.workload_file(declared).exists()


def test_the_real_run_records_nothing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(DECLARED_ENV, str(tmp_path / "declared.json"))
    set_spec(monkeypatch, {"mode": "apply", "config": {"micro_batch_size": 4}})
    assert knob("micro_batch_size", 32) == 4
    step(4)
    assert not (tmp_path / "declared.json").exists() and loop._state == {"probe": None}


# ---------------------------------------------------------------- the probe


def test_the_probe_times_the_steps_after_warm_up() -> None:
    # warm-up steps of 5 s (compilation, say) are not timed; two timed steps of 0.5 s each
    probe = Probe(trial_spec(warmup=2, measure=2), clock=Clock([5.0, 5.0, 0.5, 0.5]), world=2)
    assert [probe.on_step(8) for _ in range(3)] == [None, None, None]
    outcome = probe.on_step(8)
    assert outcome is not None and outcome.status == "ok"
    assert outcome.value == pytest.approx(2 * 8 * 2 / 1.0)  # 2 steps x 8 samples x 2 ranks in 1 s
    assert outcome.metrics == {"step_s": pytest.approx(0.5), "timed_steps": 2.0, "spread": 0.0}
    assert outcome.peak_mem_mb > 0


@pytest.mark.parametrize(("read", "global_batch", "per_step"), [
    ({"micro_batch_size": 4, "grad_accum": 3}, 64, 4 * 3 * 2),  # the knob values the script runs with
    ({"micro_batch_size": 4}, None, 4 * 2),
    ({}, 64, 64),  # the launcher's global batch
    ({}, None, 1),  # nothing known: optimizer steps per second
])
def test_a_step_without_samples_counts_what_the_script_read(read: dict[str, int], global_batch: int | None,
                                                            per_step: int) -> None:
    probe = Probe(trial_spec(warmup=1, measure=1, global_batch=global_batch), clock=Clock([1.0, 2.0]), world=2)
    probe.read.update(read)
    probe.on_step()
    outcome = probe.on_step()
    assert outcome is not None and outcome.value == pytest.approx(per_step / 2.0)


def test_a_non_finite_loss_ends_the_trial_as_nan() -> None:
    probe = Probe(trial_spec(warmup=1, measure=5), clock=Clock([1.0, 1.0]))
    assert probe.on_step(8, loss=2.5) is None
    outcome = probe.on_step(8, loss=math.inf)
    assert outcome is not None and outcome.status == "nan" and "non-finite loss inf at step 2" in outcome.error
    assert probe.on_step(8, loss=1.0) is outcome  # decided: later steps change nothing


def test_a_trial_under_the_cut_off_is_cut_short_after_its_first_timed_step() -> None:
    # 8 samples/s measured, cut-off 20: cut after the first timed step instead of running all 10
    probe = Probe(trial_spec(warmup=1, measure=10, cut_off=20.0), clock=Clock([1.0, 1.0]), world=1)
    assert probe.on_step(8) is None
    outcome = probe.on_step(8)
    assert outcome is not None and outcome.value == pytest.approx(8.0) and outcome.metrics["cut_short"] == 1.0


def test_a_multi_process_trial_is_never_cut_short() -> None:
    # ranks time themselves: one leaving early would strand the others in a collective
    probe = Probe(trial_spec(warmup=1, measure=3, cut_off=1000.0), clock=Clock([1.0, 1.0, 1.0, 1.0]), world=2)
    outcomes = [probe.on_step(8) for _ in range(4)]
    assert outcomes[:3] == [None, None, None] and "cut_short" not in outcomes[3].metrics


@pytest.mark.parametrize("compiling", [False, True])
def test_a_very_slow_warm_up_step_is_cut_unless_compiling(compiling: bool) -> None:
    # warm-up steps of 2 s at 8 samples: 4 samples/s, under a third of the cut-off of 30
    spec = trial_spec(warmup=3, measure=2, cut_off=30.0, config={"compile": "default" if compiling else "off"})
    probe = Probe(spec, clock=Clock([0.0, 2.0, 2.0, 2.0, 0.1, 0.1]), world=1)
    first = probe.on_step(8)  # the first step has no step before it to time from: never cut
    second = probe.on_step(8)
    assert first is None
    if compiling:
        assert second is None
    else:
        assert second is not None and second.metrics.get("cut_short") == 1.0 and second.value == pytest.approx(4.0)


def test_a_script_that_ends_early_says_why() -> None:
    probe = Probe(trial_spec(warmup=1, measure=2))
    assert probe.unfinished() is None  # a clean exit before any step: the launcher says what to do
    assert "after 0 steps the script raised KeyError: 'x'" in probe.unfinished("KeyError: 'x'").error
    probe.on_step(8)
    assert "ended after 1 steps (step() calls), before the 3 a trial needs" in probe.unfinished().error


def test_step_rejects_a_bad_sample_count() -> None:
    probe = Probe(trial_spec())
    with pytest.raises(ValueError, match=re.escape("step(samples=...) must be a number of samples >= 0, got -1")):
        probe.on_step(-1)


# ---------------------------------------------------------------- in a child process

SCRIPT = """
import sys
from pathlib import Path
import autoscout_plugin as autoscout

out = Path(sys.argv[1])
batch = autoscout.knob("micro_batch_size", 32)
for i in range(1, int(sys.argv[2]) + 1):
    if i == int(sys.argv[4]):
        raise RuntimeError("boom")
    loss = float("nan") if i == int(sys.argv[3]) else 1.0 / i
    autoscout.step(batch, loss=loss)
    out.write_text(str(i))  # the last step this process finished
print("finished the loop")
"""


def run_child(tmp_path: Path, spec: dict[str, Any] | None, steps: int, nan_at: int = -1, raise_at: int = -1,
              rank: str | None = None) -> tuple[subprocess.CompletedProcess[str], dict[str, Any] | None, int]:
    script = tmp_path / "child.py"
    script.write_text(textwrap.dedent(SCRIPT))
    result, done = tmp_path / "result.json", tmp_path / "done.txt"
    env = {"PATH": "/usr/bin:/bin", RESULT_ENV: str(result), "WORLD_SIZE": "2", DECLARED_ENV: str(tmp_path / "d.json")}
    if spec is not None:
        env[LAUNCH_ENV] = json.dumps(spec)
    if rank is not None:
        env["RANK"] = rank
    proc = subprocess.run([sys.executable, str(script), str(done), str(steps), str(nan_at), str(raise_at)], env=env,
                          capture_output=True, text=True, timeout=60, check=False)
    data = json.loads(result.read_text()) if result.exists() and result.read_text() else None
    return proc, data, int(done.read_text()) if done.exists() else 0


def test_step_ends_a_trial_process_at_warmup_plus_measure(tmp_path: Path) -> None:
    proc, result, last = run_child(tmp_path, trial_spec(warmup=2, measure=3, config={"micro_batch_size": 4}), 50)
    assert proc.returncode == 0 and "finished the loop" not in proc.stdout
    assert last == 4  # the 5th step() call never returned
    assert result is not None and result["status"] == "ok" and result["value"] > 0
    assert result["metrics"]["step_s"] > 0 and result["peak_mem_mb"] > 0
    assert json.loads((tmp_path / "d.json").read_text()) == {"micro_batch_size": 32}
    assert stepped_marker(tmp_path / "d.json").exists()  # the launcher's sign that step() is called at all


def test_every_rank_leaves_at_the_same_step_and_only_rank_zero_writes(tmp_path: Path) -> None:
    proc, result, last = run_child(tmp_path, trial_spec(warmup=1, measure=2), 50, rank="1")
    assert proc.returncode == 0 and last == 2 and result is None
    assert not (tmp_path / "d.json").exists() and not stepped_marker(tmp_path / "d.json").exists()


def test_a_nan_loss_ends_the_trial_process(tmp_path: Path) -> None:
    proc, result, last = run_child(tmp_path, trial_spec(warmup=1, measure=5), 50, nan_at=3)
    assert proc.returncode == 0 and last == 2
    assert result is not None and result["status"] == "nan" and "at step 3" in result["error"]


def test_a_trial_script_that_ends_too_early_reports_it(tmp_path: Path) -> None:
    proc, result, last = run_child(tmp_path, trial_spec(warmup=2, measure=5), 3)
    assert proc.returncode == 0 and last == 3 and "finished the loop" in proc.stdout
    assert result is not None and result["status"] == "error" and "ended after 3 steps" in result["error"]


def test_a_trial_script_that_raises_reports_the_exception(tmp_path: Path) -> None:
    proc, result, last = run_child(tmp_path, trial_spec(warmup=2, measure=5), 50, raise_at=3)
    assert proc.returncode == 1 and last == 2 and "RuntimeError: boom" in proc.stderr  # the usual traceback too
    assert result is not None and result["status"] == "error"
    assert result["error"] == "after 2 steps the script raised RuntimeError: boom"


def test_a_clean_exit_before_any_step_writes_nothing(tmp_path: Path) -> None:
    proc, result, last = run_child(tmp_path, trial_spec(), 0)
    assert proc.returncode == 0 and result is None and not stepped_marker(tmp_path / "d.json").exists()


def test_without_the_launcher_the_loop_runs_to_its_end(tmp_path: Path) -> None:
    proc, result, last = run_child(tmp_path, None, 20, nan_at=3)
    assert proc.returncode == 0 and last == 20 and result is None and "finished the loop" in proc.stdout
