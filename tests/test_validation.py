"""One validation layer (`autoscout_plugin.validate`) for the command line and the Python options.

Property-based (hypothesis) over the `autoscout` CLI (`space`, `plan`, `infer`), the launcher's parser
(`--autoscout-*`, `--num_processes`, ...) and the option objects (`AutoScoutOptions`, `InferenceOptions`,
`TuneOptions`): a bad value ends in a clear error naming the option (exit code 2, or a `ValueError`),
never a traceback, never silent acceptance, and in well under a second; a good value is accepted
unchanged. Then every example of issue 17 (items 4 and 6), one by one, and the offline default of
`autoscout infer`.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import re
import socket
import sys
import time
import types
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from autoscout_plugin import cli, validate
from autoscout_plugin.costmodel.cluster import Layout, LayoutError
from autoscout_plugin.costmodel.plan import MAX_GLOBAL_BATCH, MAX_GPUS, MAX_SEQ_LEN, plan
from autoscout_plugin.options import OBJECTIVES, AutoScoutOptions
from autoscout_plugin.search import strategy_names
from autoscout_plugin.serving import INFERENCE_KNOBS, InferenceOptions
from autoscout_plugin.serving import OBJECTIVES as INFERENCE_OBJECTIVES
from autoscout_plugin.space.catalogue import CATALOGUE
from autoscout_plugin.tuner import TuneOptions

FAST_S = 1.0
"""A refusal does no work: it must come well within a second of this process's CPU time (CPU time, not wall
time: another process keeping the cores busy must not fail the test)."""
PROPERTY = settings(max_examples=60, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

JUNK = ["", " ", "inf", "-inf", "+inf", "nan", "NaN", "1.5", "1e3", "1e400", "-0", "0x10", "abc", "\u0663", "1_000",
        "+", "-", "9" * 40, "\x00", "1 2", "None", "true", "\n", "--x", "0.0", "-1e-300"]
PLAN = ["plan", "--model", "gpt3-5b", "--gpu", "h100", "--gpus", "8", "--global-batch", "8"]
INFER = ["infer", "--model-type", "gpt2"]


# ---------------------------------------------------------------- helpers
def run_cli(argv: list[str]) -> tuple[Any, str, float]:
    """(exit code, stderr, seconds) of `autoscout ARGV`, in this process."""
    err, out = io.StringIO(), io.StringIO()
    start = time.process_time()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
        try:
            code = cli.main(argv)
        except SystemExit as exc:  # cli.main returns its code; an argparse exit would do too
            code = exc.code
    return code, err.getvalue(), time.process_time() - start


def assert_refused(argv: list[str], *needles: str) -> str:
    """`argv` is refused: exit code 2, no traceback, `autoscout: error: ...` naming the needles, fast."""
    code, err, seconds = run_cli(argv)
    assert code == 2, (argv, code, err[-500:])
    assert "Traceback" not in err, err
    last = err.strip().splitlines()[-1]
    assert last.startswith("autoscout: error:"), last
    for needle in needles:
        assert needle in last, (needle, last)
    assert seconds < FAST_S, (argv, seconds)
    return last


@pytest.fixture
def no_inference(monkeypatch: pytest.MonkeyPatch) -> None:
    """`autoscout infer` must refuse every value these tests give before the model is built: reaching the
    inference module fails the test (a silently accepted value)."""
    fake = types.ModuleType("autoscout_plugin.integrations.inference")

    def main(args: Any) -> int:
        raise AssertionError(f"autoscout infer accepted a bad value and went on: {args}")

    fake.main = main  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "autoscout_plugin.integrations.inference", fake)


def texts() -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from(JUNK), st.text(max_size=12))


def int_texts() -> st.SearchStrategy[str]:
    return st.one_of(st.integers(min_value=-10**30, max_value=10**30).map(str), texts())


def float_texts() -> st.SearchStrategy[str]:
    return st.one_of(st.floats(allow_nan=True, allow_infinity=True).map(repr), int_texts())


def valid_int(text: str, low: int | None, high: int | None) -> bool:
    if not re.fullmatch(r"\s*[+-]?[0-9]+\s*", text):
        return False
    value = int(text)
    return (low is None or value >= low) and (high is None or value <= high)


def valid_float(text: str, high: float | None = None) -> bool:
    try:
        value = float(text)
    except ValueError:
        return False
    return math.isfinite(value) and value > 0 and (high is None or value <= high)


def with_option(base: list[str], flag: str, value: str) -> list[str]:
    """`base` with `flag` (and its value) removed, then `flag=value` added."""
    out, skip = [], False
    for token in base:
        if skip:
            skip = False
        elif token == flag:
            skip = True
        else:
            out.append(token)
    return [*out, f"{flag}={value}"]


# ---------------------------------------------------------------- (a) the CLI: numbers
INT_OPTIONS = [
    (["space"], "--global-batch", 1, MAX_GLOBAL_BATCH),
    (PLAN, "--gpus", 1, MAX_GPUS), (PLAN, "--global-batch", 1, MAX_GLOBAL_BATCH), (PLAN, "--seq-len", 1, MAX_SEQ_LEN),
    (PLAN, "--top", 0, None),
    (INFER, "--max-trials", 1, None), (INFER, "--requests", 1, cli.MAX_REQUESTS),
    (INFER, "--seed", 0, validate.MAX_SEED),
]
FLOAT_OPTIONS = [(INFER, flag) for flag in ("--slo-p99-ms", "--memory-cap-mb", "--price-per-hour", "--max-seconds")]


@pytest.mark.parametrize(("base", "flag", "low", "high"), INT_OPTIONS, ids=lambda v: v if isinstance(v, str) else "")
@PROPERTY
@given(text=int_texts())
def test_every_bad_integer_on_the_command_line_is_refused_clearly(base: list[str], flag: str, low: int,
                                                                  high: int | None, text: str,
                                                                  no_inference: None) -> None:
    assume(not valid_int(text, low, high))
    assert_refused(with_option(base, flag, text), flag)


@pytest.mark.parametrize(("base", "flag"), FLOAT_OPTIONS, ids=lambda v: v if isinstance(v, str) else "")
@PROPERTY
@given(text=float_texts())
def test_every_bad_number_on_the_command_line_is_refused_clearly(base: list[str], flag: str, text: str,
                                                                 no_inference: None) -> None:
    assume(not valid_float(text))
    assert_refused(with_option(base, flag, text), flag)


# ---------------------------------------------------------------- (a) the CLI: texts, lists, lengths, --set
def valid_lengths(text: str) -> bool:
    if ":" in text:
        parts = text.split(":")
        if len(parts) != 2:
            return False
    else:
        parts = text.split(",")
    if not all(re.fullmatch(r"\s*[0-9]+\s*", p) for p in parts):
        return False
    values = [int(p) for p in parts]
    return all(1 <= v <= validate.MAX_TOKENS for v in values) and (":" not in text or values[0] <= values[1])


@pytest.mark.parametrize("flag", ["--prompt-len", "--output-len"])
@PROPERTY
@given(text=st.one_of(texts(), *(st.lists(st.integers(-3, 2**21).map(str), min_size=1, max_size=3).map(sep.join)
                                 for sep in (":", ","))))
def test_bad_token_lengths_are_refused(flag: str, text: str, no_inference: None) -> None:
    assume(not valid_lengths(text))
    assert_refused([*INFER, f"{flag}={text}"], flag)


def valid_include(text: str) -> bool:
    items = [item.strip() for item in text.split(",")]
    return all(items) and all(i in INFERENCE_KNOBS for i in items) and len(set(items)) == len(items)


@PROPERTY
@given(text=st.one_of(texts(), st.lists(st.sampled_from([*INFERENCE_KNOBS, "", " ", "beam", "Batch_size"]),
                                        max_size=4).map(",".join)))
def test_bad_knob_lists_are_refused(text: str, no_inference: None) -> None:
    assume(not valid_include(text))
    assert_refused([*INFER, f"--include={text}"], "--include")


SIZE_KEYS = ["n_layer", "n_embd", "hidden_size", "num_attention_heads", "num_hidden_layers", "vocab_size",
             "intermediate_size", "head_dim", "max_position_embeddings", "n_positions"]
BAD_SETS = st.one_of(
    texts().filter(lambda t: "=" not in t),  # no KEY=VALUE
    st.tuples(st.sampled_from(SIZE_KEYS), st.one_of(st.integers(max_value=0), st.integers(min_value=2**20 + 1),
                                                    st.floats(allow_nan=True), st.sampled_from(["x", "", "2.0", "1e3"])
                                                    )).map(lambda kv: f"{kv[0]}={kv[1]}"),
    st.sampled_from(sorted(validate.LOADER_KEYS)).map(lambda k: f"{k}=true"),
    st.tuples(st.sampled_from(["resid_pdrop", "layer_norm_epsilon", "rope_theta"]),
              st.sampled_from(["nan", "inf", "-inf", "1e999", ""])).map(lambda kv: f"{kv[0]}={kv[1]}"),
    st.sampled_from(["=2", " =2", "1x=2", "n-layer=2", "a.b=1", "_name_or_path=x", "__class__=x"]),
)


@PROPERTY
@given(item=BAD_SETS)
def test_bad_config_overrides_are_refused_before_torch_loads(item: str, no_inference: None) -> None:
    assert_refused([*INFER, "--set", item], "--set")


@PROPERTY
@given(key=st.sampled_from(SIZE_KEYS), a=st.integers(1, 64), b=st.integers(1, 64))
def test_a_config_key_given_twice_is_refused(key: str, a: int, b: int, no_inference: None) -> None:
    assert_refused([*INFER, "--set", f"{key}={a}", "--set", f"{key}={b}"], "twice")


BLANK = st.one_of(st.sampled_from(["", " ", "\x00", "\t\n", " \x00 "]), st.text(alphabet=" \t\n", max_size=4),
                  st.text(max_size=5).map(lambda t: t + "\x00"))


@pytest.mark.parametrize(("base", "flag"), [(INFER, "--model-type"), (INFER, "--model"), (INFER, "--report"),
                                            (["space"], "--workload"), (PLAN, "--json"), (PLAN, "--model"),
                                            (PLAN, "--gpu"), (PLAN, "--layout")])
@PROPERTY
@given(text=BLANK)
def test_empty_names_and_paths_are_refused(base: list[str], flag: str, text: str, no_inference: None) -> None:
    argv = with_option(base, flag, text)
    if flag == "--model" and base is INFER:
        argv = [a for a in argv if a not in ("--model-type", "gpt2")]
    assert_refused(argv, flag)


@pytest.mark.parametrize(("base", "flag", "known"), [
    (INFER, "--objective", INFERENCE_OBJECTIVES), (PLAN, "--precision", ("bf16", "fp16", "fp8", "fp32", "tf32")),
    (PLAN, "--model", ()), (PLAN, "--gpu", ())])
@PROPERTY
@given(text=texts())
def test_unknown_choices_are_refused(base: list[str], flag: str, known: tuple[str, ...], text: str,
                                     no_inference: None) -> None:
    from autoscout_plugin.costmodel.catalogue import gpu
    from autoscout_plugin.costmodel.presets import preset

    assume(text not in known)
    if flag in ("--model", "--gpu"):
        with contextlib.suppress(ValueError):
            (preset if flag == "--model" else gpu)(text)
            assume(False)  # a known preset or GPU
    last = assert_refused(with_option(base, flag, text))
    assert flag in last or f"unknown {'model preset' if flag == '--model' else 'GPU'} {text!r}" in last, last


LAYOUT_ITEMS = st.one_of(
    st.tuples(st.sampled_from(["tp", "pp", "cp", "vp", "mbs", "dp", "sp", "offload", "compile", "precision",
                               "sharding", "recompute", "xx", "TP", ""]),
              st.sampled_from(["1", "2", "4", "8", "0", "-1", "3", "x", "", "maybe", "fp8", "zero1", "full",
                               "1.5", "\u0663", "99999999999999999999"])).map(lambda kv: f"{kv[0]}={kv[1]}"),
    texts())


@settings(PROPERTY, max_examples=40)
@given(items=st.lists(LAYOUT_ITEMS, min_size=1, max_size=4))
def test_any_layout_text_is_read_or_refused_cleanly(items: list[str]) -> None:
    text = ",".join(items)
    code, err, seconds = run_cli([*PLAN, f"--layout={text}"])
    assert "Traceback" not in err
    if code != 0:
        assert code == 2
        last = err.strip().splitlines()[-1]
        assert last.startswith("autoscout: error:") and "layout" in last.lower(), last
        assert seconds < FAST_S
    else:  # accepted: each key once, every value readable
        keys = [i.partition("=")[0].strip().lower() for i in items if i.strip()]
        canonical = [{"sp": "sequence_parallel", "offload": "cpu_offload"}.get(k, k) for k in keys]
        assert len(canonical) == len(set(canonical)), text


# ---------------------------------------------------------------- (b) the launcher's parser
@pytest.fixture(scope="module")
def launch(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """`parse` of `autoscout launch` with no accelerate config file of the machine's user, and a script."""
    pytest.importorskip("accelerate")
    from accelerate.commands import config as accelerate_config
    from autoscout_plugin.integrations._accelerate_args import LaunchError, parse

    root = tmp_path_factory.mktemp("launch")
    script = root / "train.py"
    script.write_text("print('hi')\n")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(accelerate_config, "default_config_file", str(root / "none.yaml"))
        yield types.SimpleNamespace(parse=parse, error=LaunchError, script=str(script))


def launch_refusal(launch: Any, argv: list[str]) -> tuple[str, float]:
    """The refusal of `autoscout launch ARGV` (a LaunchError, or accelerate's argparse exit 2) and its time."""
    err = io.StringIO()
    start = time.process_time()
    with contextlib.redirect_stderr(err):
        try:
            launch.parse(argv)
        except launch.error as exc:
            return str(exc), time.process_time() - start
        except SystemExit as exc:
            assert exc.code == 2
            return err.getvalue().strip().splitlines()[-1], time.process_time() - start
    raise AssertionError(f"accepted: {argv}")


LAUNCH_INTS = [("--autoscout-trials", 1, None, "max_trials"), ("--autoscout-warmup", 0, None, "warmup_steps"),
               ("--autoscout-measure", 1, None, "measure_steps"), ("--autoscout-confirm", 0, None, "confirm_top"),
               ("--num_processes", 1, 1024, None), ("--num_cpu_threads_per_process", 1, None, None),
               ("--main_process_port", 1, 65535, None), ("--num_machines", 1, 1, None)]


def python_int(text: str) -> int | None:
    """What argparse's `type=int` (accelerate's parser) makes of `text`."""
    try:
        return int(text)
    except ValueError:
        return None


@pytest.mark.parametrize(("flag", "low", "high", "field"), LAUNCH_INTS, ids=lambda v: v if isinstance(v, str) else "")
@PROPERTY
@given(text=int_texts())
def test_launcher_integers_are_refused_or_taken_as_given(launch: Any, flag: str, low: int, high: int | None,
                                                         field: str | None, text: str) -> None:
    argv = ["--autoscout", f"{flag}={text}", launch.script]
    value = python_int(text)
    if value is not None and value >= low and (high is None or value <= high):
        request = launch.parse(argv)  # accepted: and read as given, not misread
        if field:
            assert getattr(request.options, field) == value
        else:
            assert getattr(request.namespace, flag[2:]) == value
        return
    message, seconds = launch_refusal(launch, argv)
    assert flag.replace("-", "_")[2:] in message.replace("-", "_"), message
    assert seconds < FAST_S


@pytest.mark.parametrize(("flag", "high", "field"), [
    ("--autoscout-seconds", None, "max_seconds"), ("--autoscout-timeout", validate.MAX_TIMEOUT_S, "trial_timeout_s")])
@PROPERTY
@given(text=float_texts())
def test_launcher_seconds_are_refused_or_taken_as_given(launch: Any, flag: str, high: float | None, field: str,
                                                        text: str) -> None:
    argv = ["--autoscout", f"{flag}={text}", launch.script]
    try:
        value: float | None = float(text)
    except ValueError:
        value = None
    if value is not None and math.isfinite(value) and value > 0 and (high is None or value <= high):
        assert getattr(launch.parse(argv).options, field) == value
        return
    message, seconds = launch_refusal(launch, argv)
    assert flag.replace("-", "_")[2:] in message.replace("-", "_"), message
    assert seconds < FAST_S


@PROPERTY
@given(text=st.one_of(st.sampled_from(["", " ", ",", "precision,precision", "grad_accum", "num_procs", "cpu_offload",
                                       "precision,,", ".", "/", "\x00"]), st.text(max_size=8),
                      st.lists(st.sampled_from(["precision", "compile", "beam", " ", "num_threads"]), max_size=3).map(
                          ",".join)),
       flag=st.sampled_from(["--autoscout-include", "--autoscout-report", "--autoscout-store"]))
def test_launcher_names_and_paths_are_refused_or_taken_as_given(launch: Any, flag: str, text: str) -> None:
    from autoscout_plugin.integrations._accelerate_args import GPU_ONLY, LAUNCHER_KNOBS, SCRIPT_KNOBS

    argv = ["--autoscout", f"{flag}={text}", launch.script]
    if flag == "--autoscout-include":
        items = [t.strip() for t in text.split(",") if t.strip()]
        valid = bool(items) and len(set(items)) == len(items) and all(
            i in (*LAUNCHER_KNOBS, *SCRIPT_KNOBS) and i not in GPU_ONLY for i in items)
    else:
        valid = bool(text.strip()) and "\x00" not in text  # a folder as the store: a fresh store, a warning
    if valid:
        request = launch.parse(argv)
        if flag == "--autoscout-include":
            assert request.include == tuple(items)
        else:
            assert getattr(request.options, flag.rsplit("-", 1)[1]) == text
        return
    message, seconds = launch_refusal(launch, argv)
    assert "--autoscout-" in message or "--autoscout_" in message, message
    assert seconds < FAST_S


# ---------------------------------------------------------------- (c) the Python options
ANY = st.one_of(st.none(), st.booleans(), st.integers(-10**20, 10**20), st.integers(-3, 5), st.floats(),
                st.floats(0, 2), st.text(max_size=6), st.lists(st.integers(), max_size=2),
                st.dictionaries(st.text(max_size=3), st.integers(), max_size=2), st.just(object()), st.just(b"x"),
                st.just(Path("x.sqlite")), st.just(float("inf")), st.just(2**70))


def is_int(v: Any, low: int | None = None, high: int | None = None) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and (low is None or v >= low) and (high is None or v <= high)


def is_number(v: Any, low: float = 0.0, high: float | None = None, *, closed_low: bool = False,
              open_high: bool = False) -> bool:
    if not isinstance(v, (int, float)) or isinstance(v, bool):
        return False
    try:
        if not math.isfinite(v):
            return False
    except OverflowError:
        return False
    above = v >= low if closed_low else v > low
    below = high is None or (v < high if open_high else v <= high)
    return above and below


def is_path(v: Any, *, file: bool = False) -> bool:
    text = os.fspath(v) if isinstance(v, os.PathLike) else v
    return isinstance(text, str) and bool(text.strip()) and "\x00" not in text and not (file and os.path.isdir(text))


def is_names(v: Any, known: Any) -> bool:
    if isinstance(v, (str, bytes)) or not isinstance(v, (list, tuple, set, frozenset)):
        return False
    items = list(v)
    return bool(items) and all(isinstance(i, str) and i in known for i in items) and len(set(items)) == len(items)


def training_pin_ok(name: str, value: Any) -> bool:
    kind = CATALOGUE[name].kind
    if kind == "int":
        return is_int(value, 0 if name in ("num_workers", "zero_stage") else 1, 3 if name == "zero_stage" else None)
    if kind == "float":
        return is_number(value)
    if kind == "bool":
        return isinstance(value, bool)
    if name == "strategy":
        return value in ("single", "ddp", "fsdp", "deepspeed") and isinstance(value, str)
    return isinstance(value, str) and bool(value.strip()) and "\x00" not in value


TRAINING_KNOBS = [k for k in CATALOGUE if k != "grad_accum"]
AUTOSCOUT_FIELDS: dict[str, tuple[Any, Any]] = {
    "max_trials": (lambda v: (isinstance(v, str) and v == "auto") or is_int(v, 1),
                   st.one_of(st.integers(-2, 20), st.sampled_from(["auto", "Auto", "8"]))),
    "max_seconds": (lambda v: v is None or is_number(v), st.floats(-1, 1e9)),
    "max_fraction": (lambda v: v is None or is_number(v, 0, 1), st.floats(-1, 2)),
    "objective": (lambda v: v in OBJECTIVES and isinstance(v, str), st.sampled_from([*OBJECTIVES, "loss"])),
    "include": (lambda v: v is None or is_names(v, TRAINING_KNOBS),
                st.lists(st.sampled_from([*CATALOGUE, "nope", 3]), max_size=3).flatmap(
                    lambda xs: st.sampled_from([xs, tuple(xs),
                                                set(xs) if all(isinstance(x, str) for x in xs) else xs]))),
    "pin": (lambda v: isinstance(v, dict) and all(isinstance(k, str) and k in TRAINING_KNOBS
                                                  and training_pin_ok(k, x) for k, x in v.items()),
            st.dictionaries(st.sampled_from([*CATALOGUE, "nope"]), ANY, max_size=2)),
    "store": (lambda v: v is None or is_path(v), st.sampled_from([".", "/", "s.sqlite", " "])),  # see outputs.py
    "relaunch": (lambda v: isinstance(v, bool), st.sampled_from(["no", "yes", 0, 1, "False"])),
    "report": (lambda v: v is None or is_path(v), st.sampled_from(["", "r", " "])),
    "warmup_steps": (lambda v: is_int(v, 0), st.integers(-2, 5)),
    "measure_steps": (lambda v: is_int(v, 1), st.integers(-2, 5)),
    "measure_precision": (lambda v: v is None or is_number(v, 0, 1, open_high=True), st.floats(-1, 2)),
    "max_measure_steps": (lambda v: v is None or is_int(v, 4), st.integers(-2, 14)),  # >= measure_steps' 4
    "trial_timeout_s": (lambda v: is_number(v, 0, validate.MAX_TIMEOUT_S), st.floats(-1, 1e7)),
    "cut_below": (lambda v: v is None or is_number(v, 0, 1, open_high=True), st.floats(-1, 2)),
    "confirm_top": (lambda v: is_int(v, 0), st.integers(-2, 5)),
    "confirm_rounds": (lambda v: is_int(v, 1), st.integers(-2, 5)),
    "patience": (lambda v: v is None or is_int(v, 1), st.integers(-2, 5)),
    "seed": (lambda v: is_int(v, 0, validate.MAX_SEED), st.integers(-2, 2**33)),
    "search": (lambda v: isinstance(v, str) and v in strategy_names(), st.sampled_from([*strategy_names(), "sa"])),
    "progress": (lambda v: isinstance(v, bool), st.sampled_from(["no", 0, 1])),
}


def inference_pin_ok(name: str, value: Any) -> bool:
    choices = {"precision": ("32-true", "bf16-true", "16-true"), "kv_cache": ("dynamic", "static"),
               "compile": ("off", "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")}
    if name in choices:
        return isinstance(value, str) and value in choices[name]
    if name == "attn_implementation":
        return isinstance(value, str) and bool(value.strip()) and "\x00" not in value
    return is_int(value, 1)


INFERENCE_FIELDS: dict[str, tuple[Any, Any]] = {
    "objective": (lambda v: isinstance(v, str) and v in INFERENCE_OBJECTIVES and v != "cost",
                  st.sampled_from([*INFERENCE_OBJECTIVES, "speed"])),
    **{name: (lambda v: v is None or is_number(v), st.floats(-1, 1e6))
       for name in ("slo_p99_s", "memory_cap_mb", "price_per_hour", "max_seconds")},
    "max_trials": (lambda v: is_int(v, 1), st.integers(-2, 20)),
    "include": (lambda v: v is None or is_names(v, INFERENCE_KNOBS),
                st.lists(st.sampled_from([*INFERENCE_KNOBS, "beam"]), max_size=3)),
    "pin": (lambda v: isinstance(v, dict) and all(isinstance(k, str) and k in INFERENCE_KNOBS
                                                  and inference_pin_ok(k, x) for k, x in v.items()),
            st.dictionaries(st.sampled_from([*INFERENCE_KNOBS, "beam"]),
                            st.one_of(ANY, st.sampled_from(["static", "fp64", "sdpa", "32-true"])), max_size=2)),
    "check_outputs": (lambda v: isinstance(v, bool), st.sampled_from(["no", 1])),
    "min_agreement": (lambda v: is_number(v, 0, 1), st.floats(-1, 2)),
    "warmup_batches": (lambda v: is_int(v, 0), st.integers(-2, 3)),
    "trial_timeout_s": (lambda v: is_number(v, 0, validate.MAX_TIMEOUT_S), st.floats(-1, 1e7)),
    "seed": (lambda v: is_int(v, 0, validate.MAX_SEED), st.integers(-2, 2**33)),
    "report": (lambda v: v is None or is_path(v), st.sampled_from(["", "r", " "])),
    "progress": (lambda v: isinstance(v, bool), st.sampled_from(["no", 0, 1])),
}


def check_option(cls: type, name: str, value: Any, valid: bool) -> None:
    start = time.process_time()
    if not valid:
        with pytest.raises(ValueError) as info:  # never TypeError, AttributeError, ...
            cls(**{name: value})
        assert name in str(info.value) or "knob" in str(info.value) or "pin[" in str(info.value), str(info.value)
        assert time.process_time() - start < FAST_S
        return
    options = cls(**{name: value})
    got = getattr(options, name)
    if name == "include" and value is not None:
        assert got == tuple(value)
    elif name == "pin":
        assert dict(got) == value
    else:
        assert got is value or got == value


@pytest.mark.parametrize("name", sorted(AUTOSCOUT_FIELDS))
@PROPERTY
@given(data=st.data())
def test_autoscout_options_refuse_bad_values_and_keep_good_ones(name: str, data: st.DataObject) -> None:
    valid, specific = AUTOSCOUT_FIELDS[name]
    value = data.draw(st.one_of(ANY, specific))
    check_option(AutoScoutOptions, name, value, bool(valid(value)))


@pytest.mark.parametrize("name", sorted(INFERENCE_FIELDS))
@PROPERTY
@given(data=st.data())
def test_inference_options_refuse_bad_values_and_keep_good_ones(name: str, data: st.DataObject) -> None:
    valid, specific = INFERENCE_FIELDS[name]
    value = data.draw(st.one_of(ANY, specific))
    check_option(InferenceOptions, name, value, bool(valid(value)))


TUNE_FIELDS: dict[str, tuple[Any, Any]] = {
    "max_trials": (lambda v: is_int(v, 1), st.integers(-2, 5)),
    "patience": (lambda v: v is None or is_int(v, 1), st.integers(-2, 5)),
    "max_seconds": (lambda v: v is None or is_number(v), st.floats(-1, 10)),
    "min_improvement": (lambda v: is_number(v, 0, closed_low=True), st.floats(-1, 1)),
    "memory_limit_mb": (lambda v: v is None or is_number(v), st.floats(-1, 10)),
    "reuse": (lambda v: isinstance(v, bool), st.sampled_from(["no", 1])),
    "seed": (lambda v: is_int(v, 0, validate.MAX_SEED), st.integers(-2, 2**33)),
    "store": (lambda v: v is None or is_path(v, file=True), st.sampled_from([".", "s.sqlite", ""])),
}


@pytest.mark.parametrize("name", sorted(TUNE_FIELDS))
@PROPERTY
@given(data=st.data())
def test_tune_options_refuse_bad_values_and_keep_good_ones(name: str, data: st.DataObject) -> None:
    valid, specific = TUNE_FIELDS[name]
    value = data.draw(st.one_of(ANY, specific))
    check_option(TuneOptions, name, value, bool(valid(value)))


@PROPERTY
@given(name=st.text(min_size=1, max_size=12))
def test_an_unknown_option_is_a_value_error_naming_it(name: str) -> None:
    for cls in (AutoScoutOptions, InferenceOptions, TuneOptions):
        assume(name not in cls.__dataclass_fields__)
        with pytest.raises(ValueError, match="has no option"):
            cls(**{name: 1})


# ---------------------------------------------------------------- issue 17's examples, one by one
@pytest.mark.parametrize(("argv", "needles"), [
    ([*PLAN[:6], str(10**12), *PLAN[7:]], ["--gpus must be an integer from 1 to 1048576, got 1000000000000"]),
    ([*PLAN, "--top", "-3"], ["--top must be an integer >= 0, got -3"]),
    ([*PLAN, "--layout", "tp=2,tp=4"], ["layout key 'tp' is given twice"]),
    ([*PLAN, "--layout", "tp=2,sequence_parallel=1,sp=0"], ["layout key 'sp' is given twice"]),
    ([*PLAN, "--layout", "sp=maybe"], ["layout sp must be 1 or 0", "'maybe'"]),
    ([*PLAN, "--layout", "tp=2,dp=3"], ["layout dp=3 does not match", "dp=4"]),
    ([*PLAN, "--layout", ""], ["--layout must be a non-empty string"]),
    ([*PLAN, "--seq-len", "nan"], ["--seq-len must be an integer"]),
    ([*INFER, "--slo-p99-ms", "0"], ["--slo-p99-ms must be a positive number of milliseconds, got 0.0",
                                     "leave it out for no SLO"]),
    ([*INFER, "--include", ""], ["--include names no knob"]),
    ([*INFER, "--include", "batch_size,batch_size"], ["--include lists 'batch_size' twice"]),
    ([*INFER, "--set", "n_layer=0"], ["--set n_layer is a size and must be an integer from 1 to", "got '0'"]),
    ([*INFER, "--set", "n_embd=-4"], ["--set n_embd is a size"]),
    ([*INFER, "--set", "trust_remote_code=true"], ["--set trust_remote_code: a loading option"]),
    ([*INFER, "--set", "revision=main"], ["--set revision: a loading option"]),
    ([*INFER, "--set", "n_layer=1", "--set", "n_layer=2"], ["--set gives 'n_layer' twice"]),
    ([*INFER, "--max-seconds", "inf"], ["--max-seconds must be a finite number"]),
    ([*INFER, "--requests", str(10**9)], ["--requests must be an integer from 1 to 100000"]),
    ([*INFER, "--prompt-len", "64:16"], ["--prompt-len must be N, LOW:HIGH or A,B,C with LOW <= HIGH"]),
    ([*INFER, "--model", "x"], ["--model not allowed with argument --model-type"]),
    (["infer", "--requests", "4"], ["give --model"]),
    ([*INFER, "--objective", "cost"], ["needs price_per_hour"]),
    (["space", "--global-batch", "0"], ["--global-batch must be an integer from 1 to"]),
    (["space", "--workload", "/nonexistent/w.json"], ["--workload /nonexistent/w.json: cannot read it"]),
])
def test_the_issues_command_lines_are_refused_with_what_to_do(argv: list[str], needles: list[str],
                                                              no_inference: None) -> None:
    assert_refused(argv, *needles)


def test_a_workload_file_that_is_not_an_object_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "w.json"
    path.write_text("[1, 2]")
    assert_refused(["space", "--workload", str(path)], "expected a JSON object")
    path.write_text("{not json")
    assert_refused(["space", "--workload", str(path)], "not a JSON file")


def test_the_issues_launch_lines_are_refused_before_anything_starts(launch: Any) -> None:
    cases = [(["--num_processes", "0"], "--num_processes 0: give 1 to 1024 processes"),
             (["--num_processes=-2"], "--num_processes -2"),
             (["--autoscout-seconds", "inf"], "--autoscout-seconds inf: give a positive, finite number"),
             (["--autoscout-seconds", "nan"], "--autoscout-seconds nan"),
             (["--autoscout-timeout", "1e12"], "at most 604800"),
             (["--autoscout-trials", "0"], "--autoscout-trials 0: give a positive number"),
             (["--autoscout-timeout", "-5"], "--autoscout-timeout -5.0: give a positive"),
             (["--autoscout-report", ""], "--autoscout-report '': give a file path"),
             (["--autoscout-include", "precision,precision"], "lists 'precision' twice"),
             (["--num_cpu_threads_per_process", "0"], "--num_cpu_threads_per_process 0"),
             (["--main_process_port", "70000"], "--main_process_port 70000"),
             (["--num_machines", "0"], "--num_machines 0")]
    for args, needle in cases:
        message, seconds = launch_refusal(launch, ["--autoscout", *args, launch.script])
        assert needle in message, (args, message)
        assert seconds < FAST_S


@pytest.mark.parametrize(("cls", "kwargs", "message"), [
    (AutoScoutOptions, {"relaunch": "no"}, "relaunch must be True or False, got 'no'"),
    (AutoScoutOptions, {"progress": 1}, "progress must be True or False, got 1"),
    (AutoScoutOptions, {"max_fraction": 1.5}, "max_fraction must be a fraction in (0, 1], got 1.5"),
    (AutoScoutOptions, {"max_seconds": float("inf")}, "max_seconds must be a finite number"),
    (AutoScoutOptions, {"max_seconds": 10**400}, "max_seconds must be a finite number"),
    (AutoScoutOptions, {"include": 5}, "include must be a list of knob names, got 5"),
    (AutoScoutOptions, {"include": ()}, "include is empty"),
    (AutoScoutOptions, {"include": ["num_threads", "num_threads"]}, "'num_threads' is listed twice"),
    (AutoScoutOptions, {"pin": [("num_threads", 2)]}, "pin must be a mapping"),
    (AutoScoutOptions, {"pin": {"num_threads": "two"}}, "pin['num_threads'] must be an integer >= 1, got 'two'"),
    (AutoScoutOptions, {"pin": {"pin_memory": 1}}, "pin['pin_memory'] must be True or False, got 1"),
    (AutoScoutOptions, {"pin": {"strategy": "ddp_spawn"}}, "pin['strategy'] must be one of single, ddp"),
    (AutoScoutOptions, {"warmup_steps": "2"}, "warmup_steps must be an integer >= 0, got '2'"),
    (AutoScoutOptions, {"trial_timeout_s": "600"}, "trial_timeout_s must be a positive number of seconds"),
    (AutoScoutOptions, {"trial_timeout_s": 1e12}, "at most 604800"),
    (AutoScoutOptions, {"max_trials": 2.5}, "max_trials must be >= 1 (an integer), got 2.5"),
    (AutoScoutOptions, {"seed": -1}, "seed must be an integer from 0 to 4294967295, got -1"),
    (AutoScoutOptions, {"search": "annealing"}, "unknown search strategy 'annealing'"),
    (AutoScoutOptions, {"store": ""}, "store must be a file path"),
    (AutoScoutOptions, {"max_trails": 3}, "AutoScoutOptions has no option 'max_trails'; its options are: max_trials"),
    (InferenceOptions, {"min_agreement": "x"}, "min_agreement must be in (0, 1], got 'x'"),
    (InferenceOptions, {"slo_p99_s": float("nan")}, "slo_p99_s must be a finite number"),
    (InferenceOptions, {"trial_timeout_s": None}, "trial_timeout_s must be a positive number of seconds"),
    (InferenceOptions, {"include": ()}, "include is empty"),
    (InferenceOptions, {"include": "batch_size"}, "include must be a list of knob names, got the string"),
    (InferenceOptions, {"pin": {"precision": "fp64"}}, "pin['precision'] must be one of 32-true, bf16-true"),
    (InferenceOptions, {"pin": {"batch_size": 0}}, "pin['batch_size'] must be an integer >= 1, got 0"),
    (InferenceOptions, {"check_outputs": "no"}, "check_outputs must be True or False"),
    (InferenceOptions, {"warmup_batches": "1"}, "warmup_batches must be an int >= 0, got '1'"),
    (InferenceOptions, {"beam": 4}, "InferenceOptions has no option 'beam'"),
    (TuneOptions, {"max_fraction": 1.5, "planned_run_s": 100.0}, "max_fraction must be a fraction in (0, 1]"),
    (TuneOptions, {"reuse": "no"}, "reuse must be True or False"),
])
def test_the_issues_python_options_are_refused_with_a_value_error(cls: type, kwargs: dict[str, Any],
                                                                 message: str) -> None:
    with pytest.raises(ValueError) as info:
        cls(**kwargs)
    assert message in str(info.value), str(info.value)
    assert type(info.value) is ValueError


def test_valid_values_are_taken_as_before() -> None:
    opts = AutoScoutOptions(include=["micro_batch_size"], pin={"num_threads": 2}, max_fraction=1.0,
                            store=Path("s.sqlite"), cut_below=None, seed=7)
    assert opts.include == ("micro_batch_size",) and dict(opts.pin) == {"num_threads": 2}
    assert opts.max_fraction == 1.0 and opts.store == Path("s.sqlite") and opts.seed == 7
    assert InferenceOptions(include=["batch_size"], pin={"precision": "bf16-true"}).include == ("batch_size",)
    args = cli.build_parser().parse_args([*INFER, "--include", "batch_size,precision", "--slo-p99-ms", "250"])
    assert (args.include, args.slo_p99_ms, args.prompt_len, args.output_len, args.max_trials, args.requests,
            args.seed, args.objective, args.allow_download) == (("batch_size", "precision"), 250.0, (16, 64), 32,
                                                                12, 64, 0, "throughput", False)
    options, mix = cli.infer_inputs(args)
    assert options.slo_p99_s == 0.25 and mix.prompt_len == (16, 64) and mix.n == 64
    args = cli.build_parser().parse_args([*PLAN, "--top", "0", "--layout", "tp=2,sp=off,dp=4"])
    assert (args.gpus, args.global_batch, args.top) == (8, 8, 0)
    assert Layout.parse("tp=2,sp=off,offload=yes,compile=1") == Layout(tp=2, sequence_parallel=False,
                                                                       cpu_offload=True, compile=True)
    with pytest.raises(LayoutError, match="layout dp must be a positive integer"):
        Layout.parse("dp=x")


def test_the_largest_allowed_plans_answer_in_reasonable_time() -> None:
    for gpus, batch in ((MAX_GPUS, MAX_GPUS * 16), (983_040, 983_040 * 8)):  # 983,040: many divisors
        start = time.perf_counter()
        result = plan("gpt3-175b", "h100-sxm", gpus, global_batch=min(batch, MAX_GLOBAL_BATCH))
        assert result.ranked and time.perf_counter() - start < 60  # about 1.4 s on a quiet core
    assert_refused([*PLAN[:6], str(MAX_GPUS + 1), *PLAN[7:]], "--gpus")


# ---------------------------------------------------------------- nothing from the network unless asked
@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every connection attempt is recorded and refused; a token is set that must never be sent."""
    attempts: list[Any] = []

    def connect(self: socket.socket, address: Any) -> None:
        attempts.append(address)
        raise OSError("network access in a test")

    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.setattr(socket, "create_connection", lambda address, *a, **k: connect(None, address))  # type: ignore
    monkeypatch.setenv("HF_TOKEN", "hf_must_not_be_sent")
    return attempts


def test_infer_reads_local_files_only_unless_allowed(no_network: list[Any], tmp_path: Path) -> None:
    pytest.importorskip("transformers")
    from autoscout_plugin.integrations import inference

    code, err, _ = run_cli([*INFER[:1], "--model", "someone/some-model-that-is-not-here", "--max-trials", "1"])
    assert code == 2 and "Traceback" not in err
    assert "reads local files only" in err and "--allow-download" in err
    assert no_network == []  # no request, so no token either
    # a local checkpoint loads with the network blocked; --set takes only settings of its config
    model = inference.build_model(None, "gpt2", ["n_layer=1", "n_embd=16", "n_head=2", "vocab_size=64"])
    model.save_pretrained(tmp_path / "ckpt")
    loaded = inference.build_model(str(tmp_path / "ckpt"), None, ["resid_pdrop=0.0"])
    assert loaded.config.n_layer == 1 and loaded.config.resid_pdrop == 0.0
    with pytest.raises(ValueError, match="changes a size of the weights"):
        inference.build_model(str(tmp_path / "ckpt"), None, ["n_layer=2"])
    assert no_network == []


@pytest.mark.parametrize(("overrides", "message"), [
    (["n_layr=2"], r"--set n_layr: not a setting of the gpt2 config; its settings include n_layer"),
    (["use_cache=maybe"], "use_cache is true or false"),
    (["n_positions=2.5"], "n_positions is a size"),
    (["layer_norm_epsilon=abc"], "layer_norm_epsilon is a number"),
    (["id2label=3"], "which --set cannot write"),
    (["trust_remote_code=1"], "a loading option"),
    (["n_layer=1", "num_hidden_layers=2"], "--set n_layer and --set num_hidden_layers are the same setting"),
    (["activation_function=relu", "n_layer=1", "n_embd=16", "n_head=2", "vocab_size=64"], None),
])
def test_config_overrides_are_checked_against_the_models_config(overrides: list[str], message: str | None,
                                                                no_network: list[Any]) -> None:
    pytest.importorskip("transformers")
    from autoscout_plugin.integrations.inference import build_model

    if message is None:
        config = build_model(None, "gpt2", overrides).config
        assert (config.activation_function, config.n_layer, config.n_embd) == ("relu", 1, 16)
        return
    with pytest.raises(ValueError, match=message):
        build_model(None, "gpt2", overrides)
    assert no_network == []


@pytest.mark.parametrize("allow", [False, True])
def test_only_allow_download_lets_the_hub_be_contacted(allow: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("transformers")
    import transformers
    from autoscout_plugin.integrations.inference import build_model
    from huggingface_hub import constants

    seen: dict[str, Any] = {}

    def from_pretrained(name: str, **kwargs: Any) -> Any:
        seen.update(kwargs, offline=constants.HF_HUB_OFFLINE, env=os.environ.get("HF_HUB_OFFLINE"))
        raise OSError("stop here")

    monkeypatch.setattr(transformers.AutoConfig, "from_pretrained", from_pretrained)
    before = constants.HF_HUB_OFFLINE
    with pytest.raises(ValueError, match="--allow-download" if not allow else "cannot load --model"):
        build_model("someone/some-model", None, [], allow_download=allow)
    assert seen["local_files_only"] is (not allow) and seen["trust_remote_code"] is False
    assert seen["offline"] is (True if not allow else before) and constants.HF_HUB_OFFLINE is before
    assert cli.build_parser().parse_args(["infer", "--model", "m", *(["--allow-download"] if allow else [])]
                                         ).allow_download is allow
