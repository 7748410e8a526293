"""Secrets never reach the store or a report through a trial's error text."""

from __future__ import annotations

from pathlib import Path

import pytest

from autoscout_plugin.profiling import TrialOutcome
from autoscout_plugin.redact import redact
from autoscout_plugin.space import Space
from autoscout_plugin.space.knobs import Categorical
from autoscout_plugin.trial import Fidelity
from autoscout_plugin.tuner import TuneOptions, Tuner

HF = "hf_" + "Ab3dE6gH9jK2mN5pQ8sT1vW4yZ7"
CASES = [
    (f"401 Client Error for url https://huggingface.co/api (token {HF})", HF),
    ("ghp_" + "a1B2c3D4e5F6g7H8i9J0k1L2m3N4", "ghp_"),
    ("OpenAI said: invalid key sk-" + "proj-abcdefghijklmnopqrstuvwx", "sk-proj"),
    ("AWS: AKIA" + "IOSFODNN7EXAMPLE denied", "AKIAIOSFODNN7EXAMPLE"),
    ("could not connect to postgresql://tuner:s3cr3t-pw@10.0.0.5:5432/runs", "s3cr3t-pw"),
    ("redis://:hunter22@cache:6379/0 refused", "hunter22"),
    ("bad request: {'api_key': 'Zx9-qq-77', 'n': 2}", "Zx9-qq-77"),
    ("Authorization: Bearer abc.def-ghi_jkl~123", "abc.def-ghi_jkl~123"),
    ("failed with password=pa55word; retrying", "pa55word"),
    ("jwt eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U", "eyJzdWIi"),
]


@pytest.mark.parametrize(("text", "secret"), CASES)
def test_known_secret_shapes_are_masked(text: str, secret: str) -> None:
    out = redact(text, environ={})
    assert out is not None and secret not in out and "***" in out


def test_any_value_of_a_secret_environment_variable_is_masked_whatever_its_shape() -> None:
    env = {"WANDB_API_KEY": "plain-looking-value-42", "MY_SERVICE_PASSWORD": "tr0ub4dor", "OMP_NUM_THREADS": "2",
           "HOME": "/root"}
    out = redact("login plain-looking-value-42 failed (tr0ub4dor) with 2 threads in /root", environ=env)
    assert out == "login *** failed (***) with 2 threads in /root"


def test_ordinary_error_text_is_left_as_it_is() -> None:
    text = ("RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB; torch._dynamo.exc.Unsupported: "
            "call_function BuiltinVariable(setattr) at https://pytorch.org/docs/x.html#y; micro_batch_size=8")
    assert redact(text, environ={}) == text
    assert redact(None) is None and redact("") == ""


def test_a_token_in_a_trials_exception_is_not_stored(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_TOKEN", "a-token-of-any-shape-123")

    def profile(config: dict, fidelity: Fidelity) -> TrialOutcome:
        if config["num_threads"] == 2:
            raise PermissionError("hub said 401 for a-token-of-any-shape-123 at https://u:pw12345@hub/x")
        return TrialOutcome(value=float(config["num_threads"]), cost_s=0.1)

    space = Space([Categorical(name="num_threads", choices=(1, 2))])
    store = tmp_path / "s.sqlite"
    result = Tuner(space, profile, TuneOptions(max_trials=2, confirm_top=0, patience=None, search="grid",
                                               store=str(store))).run()
    failed = [t for t in result.trials if t.status != "ok"]
    assert failed and "401" in failed[0].error
    stored = store.read_bytes() + b"".join(p.read_bytes() for p in tmp_path.glob("s.sqlite-*"))
    assert b"a-token-of-any-shape-123" not in stored and b"pw12345" not in stored
    assert all("a-token-of-any-shape-123" not in (t.error or "") for t in result.trials)
