"""Failure classes from real errors: a real dynamo failure, a real unsupported dtype, a real gloo port
clash, a real out-of-memory, in this process and through the subprocess trial runner; then what each
class rules out (exclusions, the memory boundary)."""

from __future__ import annotations

import socket
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from autoscout_plugin.failures import (
    Exclusion,
    diagnose,
    excluded_values,
    exclusions_from,
    needs_at_least,
)
from autoscout_plugin.profiling import classify_exception, describe_exception, run_subprocess_trial
from autoscout_plugin.trial import Trial

REPO = Path(__file__).resolve().parent.parent
torch = pytest.importorskip("torch")


def trial_from(exc: BaseException, config: dict[str, Any]) -> Trial:
    """The trial the tuner records when a profiler raises `exc` (see `Tuner._measure`)."""
    return Trial(config=config, status=classify_exception(exc), error=describe_exception(exc))


@pytest.fixture
def inductor_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    yield tmp_path / "inductor"


# ------------------------------------------------------------------------- real errors, in process
def test_a_real_dynamo_failure_is_unsupported_and_blames_compile(inductor_cache: Path) -> None:
    from benchmarks.workloads import build

    workload = build("recurrent")  # its scan operator has no fake kernel: dynamo cannot trace it
    model = workload.model
    model.compile()
    with pytest.raises(Exception) as info:
        workload.loss_fn(model, workload.make_batch(2, 0)).backward()
    trial = trial_from(info.value, {"compile": "default", "precision": "32-true", "micro_batch_size": 2})
    assert trial.error is not None and trial.error.startswith("torch._dynamo.exc.")
    assert (trial.status, trial.failure, trial.blame) == ("error", "unsupported", ["compile"])
    # the same error in a trial that did not compile is not blamed on compile (the user compiled)
    uncompiled = trial_from(info.value, {"compile": "off", "precision": "32-true"})
    assert uncompiled.failure == "unsupported" and uncompiled.blame == []


def test_a_real_unsupported_dtype_blames_the_precision() -> None:
    x = torch.randn(4, 4, dtype=torch.bfloat16)
    with pytest.raises(NotImplementedError) as info:
        torch.linalg.cholesky(x @ x.T + 4 * torch.eye(4, dtype=torch.bfloat16))
    trial = trial_from(info.value, {"precision": "bf16-true", "compile": "off"})
    assert "BFloat16" in (trial.error or "")
    assert (trial.failure, trial.blame) == ("unsupported", ["precision"])


def test_a_real_out_of_memory_is_oom() -> None:
    with pytest.raises(RuntimeError) as info:
        torch.empty(1 << 46, dtype=torch.uint8)  # 64 TiB
    trial = trial_from(info.value, {"micro_batch_size": 64})
    assert (trial.status, trial.failure, trial.blame) == ("oom", "oom", [])


# --------------------------------------------------------------- real errors, through a child process
def _child(code: str, timeout_s: float = 120.0) -> Trial:
    """Run `code` as a trial child that lets its exception escape, as a user's script would."""
    script = textwrap.dedent(code)
    outcome = run_subprocess_trial([sys.executable, "-c", script], timeout_s=timeout_s, cwd=str(REPO))
    return Trial(config=CONFIG, status=outcome.status, error=outcome.error, cost_s=outcome.cost_s or 0.0)


CONFIG = {"strategy": "ddp", "num_processes": 2, "compile": "default", "precision": "32-true"}


@pytest.mark.slow
def test_a_real_gloo_port_clash_in_a_child_is_transient() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        trial = _child(f"""
            import datetime, torch.distributed as dist
            dist.init_process_group("gloo", init_method="tcp://127.0.0.1:{port}", rank=0, world_size=1,
                                    timeout=datetime.timedelta(seconds=20))
        """)
    assert "EADDRINUSE" in (trial.error or "") and "DistNetworkError" in (trial.error or "")
    assert (trial.failure, trial.blame) == ("transient", [])


@pytest.mark.slow
def test_a_real_dynamo_failure_in_a_child_is_found_behind_the_traceback_hints(tmp_path: Path) -> None:
    trial = _child(f"""
        import os
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = {str(tmp_path)!r}
        from benchmarks.workloads import build
        w = build("recurrent")
        w.model.compile()
        w.loss_fn(w.model, w.make_batch(2, 0)).backward()
    """)
    # the traceback ends with "Set TORCHDYNAMO_VERBOSE=1 ...": the exception line is picked out
    assert "torch._dynamo.exc.TorchRuntimeError" in (trial.error or ""), trial.error
    assert (trial.failure, trial.blame) == ("unsupported", ["compile"])


@pytest.mark.slow
def test_a_missing_distributed_backend_in_a_child_blames_the_strategy() -> None:
    trial = _child("""
        import torch.distributed as dist
        dist.init_process_group("nccl", init_method="tcp://127.0.0.1:1", rank=0, world_size=1)
    """)
    assert "NCCL" in (trial.error or "")
    assert (trial.failure, trial.blame) == ("unsupported", ["strategy"])


# ------------------------------------------------------------------------------- classes from text
@pytest.mark.parametrize(("status", "error", "config", "expected"), [
    ("error", "RuntimeError: segfault in the data loader", {"compile": "default"}, ("crash", ())),
    ("error", None, {}, ("crash", ())),
    ("timeout", "no result after 60 s", {"compile": "default"}, ("timeout", ())),
    ("nan", "the loss is nan", {}, ("nan", ())),
    ("oom", "CUDA out of memory", {"micro_batch_size": 64}, ("oom", ())),
    ("error", "torch.distributed.elastic.rendezvous.api.RendezvousTimeoutError: ", {}, ("transient", ())),
    ("error", "torch.distributed.DistStoreError: Timed out after 901 seconds waiting for clients. 1/2 clients"
     " joined.", {}, ("transient", ())),
    ("error", "RuntimeError: bf16_compress_hook is not supported on gloo", {"ddp_comm_hook": "bf16",
                                                                           "precision": "32-true"},
     ("unsupported", ("ddp_comm_hook",))),
    ("error", "MisconfigurationException: FSDP requires a GPU accelerator", {"strategy": "fsdp"},
     ("unsupported", ("strategy",))),
    ("error", "ModuleNotFoundError: No module named 'deepspeed'", {"strategy": "deepspeed"},
     ("unsupported", ("strategy",))),
    ("error", "NotImplementedError: aten::_foo is not implemented for the MPS device", {},
     ("unsupported", ())),
    ("invalid", "no script to re-run for this trial", {"num_processes": 2}, ("unsupported", ())),
])
def test_diagnose_from_status_and_text(status: str, error: str | None, config: dict[str, Any],
                                       expected: tuple[str, tuple[str, ...]]) -> None:
    diagnosis = diagnose(status, error, config)
    assert diagnosis is not None and (diagnosis.failure, diagnosis.blame) == expected
    assert diagnose("ok", None, config) is None


def test_a_trial_keeps_a_class_it_is_given_and_refuses_an_unknown_one() -> None:
    trial = Trial(config={}, status="error", error="address already in use", failure="crash")
    assert trial.failure == "crash"
    with pytest.raises(ValueError, match="failure class 'flaky'"):
        Trial(config={}, status="error", failure="flaky")  # type: ignore[arg-type]
    assert Trial(config={}, value=1.0, failure="crash").failure is None  # an ok trial has none


# ------------------------------------------------------------------------------ what failures rule out
def test_excluded_values_follow_what_fails_together() -> None:
    assert excluded_values("compile", "max-autotune", ["off", "default", "max-autotune"]) == (
        "default", "max-autotune")
    assert excluded_values("precision", "16-mixed", ["32-true", "bf16-mixed", "16-mixed"]) == ("16-mixed",)
    assert excluded_values("strategy", "fsdp", ["single", "ddp", "fsdp"], "FSDP requires a GPU") == ("fsdp",)
    assert excluded_values("strategy", "ddp", ["single", "ddp", "fsdp"],
                           "RuntimeError: Distributed package doesn't have NCCL built in") == ("ddp", "fsdp")


def _failed(number: int, config: dict[str, Any], error: str) -> Trial:
    return Trial(config=config, status="error", error=error, number=number)


CHOICES = {"compile": ["off", "default", "max-autotune"], "precision": ["32-true", "bf16-mixed"],
           "strategy": ["single", "ddp", "fsdp"]}


def test_exclusions_name_the_values_and_the_trial() -> None:
    trials = [Trial(config={"compile": "off", "strategy": "single"}, value=5.0, number=0),
              _failed(1, {"compile": "default", "strategy": "single"}, "torch._dynamo.exc.Unsupported: x"),
              _failed(2, {"compile": "off", "strategy": "fsdp"}, "FSDP requires a GPU accelerator"),
              _failed(3, {"compile": "off", "strategy": "ddp"}, "RuntimeError: DDP is not supported on this machine")]
    found = {ex.knob: ex for ex in exclusions_from(trials, CHOICES)}
    assert found["compile"] == Exclusion("compile", ("default", "max-autotune"),
                                         "trial 1: torch._dynamo.exc.Unsupported: x")
    assert found["strategy"].values == ("fsdp", "ddp")  # two failures of one knob: one exclusion
    assert "trial 2" in found["strategy"].reason and "trial 3" in found["strategy"].reason
    assert Exclusion.from_json(found["compile"].to_json()) == found["compile"]


def test_a_value_that_ran_somewhere_is_not_excluded() -> None:
    """compile ran fine alone and failed beside FSDP: the combination is at fault, not compile."""
    trials = [Trial(config={"compile": "default", "strategy": "single"}, value=5.0, number=0),
              _failed(1, {"compile": "default", "strategy": "fsdp"}, "torch._dynamo.exc.Unsupported: x")]
    assert exclusions_from(trials, CHOICES) == []


def test_a_compile_exclusion_is_scoped_to_checkpointing_until_it_failed_under_both() -> None:
    choices = {**CHOICES, "activation_checkpointing": [False, True]}
    error = "torch._dynamo.exc.TorchRuntimeError: RuntimeError when making fake tensor call"
    without = _failed(1, {"compile": "default", "strategy": "single", "activation_checkpointing": False}, error)
    (scoped,) = exclusions_from([without], choices)
    assert scoped.when == (("activation_checkpointing", False),)
    assert not scoped.matches({"compile": "default", "activation_checkpointing": True})
    # It ran with checkpointing: only the scope without stays excluded.
    ran = Trial(config={"compile": "default", "strategy": "single", "activation_checkpointing": True},
                value=5.0, number=2)
    assert exclusions_from([without, ran], choices) == [scoped]
    # It failed under both: one exclusion that holds everywhere, both trials as its reason.
    with_ = _failed(2, {"compile": "max-autotune", "strategy": "ddp", "activation_checkpointing": True}, error)
    (everywhere,) = exclusions_from([without, with_], choices)
    assert (everywhere.values, everywhere.when) == (("default", "max-autotune"), ())
    assert "trial 1" in everywhere.reason and "trial 2" in everywhere.reason


def test_the_memory_boundary_is_monotone_and_ignores_threads() -> None:
    oom = {"strategy": "single", "micro_batch_size": 16, "activation_checkpointing": True, "num_threads": 2}
    bigger = {**oom, "micro_batch_size": 32, "activation_checkpointing": False, "num_threads": 1}
    assert needs_at_least(bigger, oom) and needs_at_least(oom, oom)
    assert not needs_at_least({**oom, "micro_batch_size": 8}, oom)
    assert not needs_at_least({**bigger, "activation_checkpointing": True, "micro_batch_size": 8}, oom)
    assert needs_at_least({**bigger, "strategy": "ddp", "num_processes": 2}, {**oom, "num_processes": 1})
    assert not needs_at_least({**bigger, "strategy": "fsdp"}, oom)  # sharding: not ordered against one process
    assert not needs_at_least({**oom, "precision": "bf16-mixed"}, {**oom, "precision": "32-true"})
    assert needs_at_least({**oom, "precision": "32-true"}, {**oom, "precision": "bf16-mixed"})
