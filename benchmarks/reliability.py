"""Reliability sweep (issue 17): bad inputs through the CLIs and the Python options, store and output
faults, trial faults and stop signals. Every case runs for real (the CLIs as subprocesses, a real
SQLite store, real processes killed by real signals) and is classified:

- `clear error`: refused before any work, with a message naming the option (exit code 2 for a CLI,
  a `ValueError` for the Python options), in under a second of its own work;
- `survived`: a fault that was recorded or warned about, and the run went on;
- `traceback`, `silent` (a bad value accepted, or a fault nobody was told of), `hang` (no answer within
  the case's limit), `orphan` (a process or temp file left behind): each one a defect.

    .venv/bin/python -m benchmarks.reliability [--only cli,options,store,trial,stop] [--json OUT]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
GOOD = ("clear error", "survived")


@dataclass
class Case:
    group: str
    what: str
    outcome: str
    seconds: float
    detail: str = ""


# ---------------------------------------------------------------- the CLIs
@contextlib.contextmanager
def _fake_hub() -> Iterator[list[bytes]]:
    """A listening socket standing in for the Hugging Face Hub: whatever connects is recorded."""
    seen: list[bytes] = []
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(1)
                with contextlib.suppress(OSError):
                    seen.append(conn.recv(4096))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    os.environ["AUTOSCOUT_FAKE_HUB"] = f"http://127.0.0.1:{server.getsockname()[1]}"
    try:
        yield seen
    finally:
        stop.set()
        thread.join()
        server.close()


def cli_cases(work: Path) -> list[tuple[str, list[str]]]:
    script = work / "train.py"
    script.write_text("import autoscout_plugin\nfor _ in range(40):\n    autoscout_plugin.step()\n")
    (work / "bad.json").write_text("{not json")
    (work / "list.json").write_text("[1, 2]")
    (work / "adir").mkdir(exist_ok=True)
    store = ["--autoscout-store", str(work / "s.sqlite")]
    launch = ["launch", "--autoscout", *store]
    plan = ["plan", "--model", "llama3-8b", "--gpu", "h100", "--gpus", "16", "--global-batch", "64"]
    infer = ["infer", "--model-type", "gpt2", "--set", "n_layer=1", "--set", "n_embd=32", "--set", "n_head=2",
             "--requests", "4", "--max-trials", "2"]
    cases: list[tuple[str, list[str]]] = []
    for value in ("0", "-4", "1.5", "abc", "", "nan"):
        cases.append((f"space --global-batch {value!r}", ["space", "--global-batch", value]))
    for path in ("missing.json", "adir", "bad.json", "list.json"):
        cases.append((f"space --workload {path}", ["space", "--workload", str(work / path)]))
    cases.append(("cpu --bogus", ["cpu", "--bogus"]))
    for flag, values in {"--gpus": ("0", "-8", "1000000000", "abc", "inf", "1e3"),
                         "--global-batch": ("0", "-1", "nan", "2.5"), "--seq-len": ("0", "-5", "abc"),
                         "--top": ("-3", "abc", "1e9x"),  # 0 is valid: the summary only
                         "--layout": ("tp=4,tp=2", "sp=maybe", "tp=0", "tp=abc", "x=1", "", "tp=", "tp4", ",,"),
                         "--model": ("nonesuch", ""), "--gpu": ("tpu9", ""), "--precision": ("int3",),
                         "--json": (str(work / "adir"),)}.items():
        for value in values:
            args = list(plan)
            if flag in args:
                args[args.index(flag) + 1] = value
            else:
                args += [flag, value]
            cases.append((f"plan {flag} {value!r}", args))
    for flag, values in {"--slo-p99-ms": ("0", "-1", "nan", "inf"), "--include": ("", ",", "bogus"),
                         "--set": ("n_layer=0", "n_layer=-1", "bogus_key=1", "trust_remote_code=true",
                                   "novalue", "=1", "n_layer=abc"),
                         "--max-trials": ("0", "-1", "x"), "--max-seconds": ("0", "inf", "nan"),
                         "--requests": ("0", "-5"), "--prompt-len": ("0", "5:2", "a:b", "", "-1"),
                         "--output-len": ("0", "-1", "1:0"), "--memory-cap-mb": ("0", "-1", "nan"),
                         "--price-per-hour": ("-1", "nan"), "--objective": ("bogus", ""),
                         "--model-type": ("bogus", ""), "--report": ("",), "--seed": ("x",)}.items():
        for value in values:
            cases.append((f"infer {flag} {value!r}", [*infer, flag, value]))
    cases.append(("infer --model gpt2 (a Hub name, no --allow-download)", ["infer", "--model", "gpt2"]))
    cases.append(("infer --model and --model-type", ["infer", "--model", str(work), "--model-type", "gpt2"]))
    cases.append(("infer without a model", ["infer"]))
    for flag, values in {"--autoscout-trials": ("0", "-1", "abc", "1.5"),
                         "--autoscout-seconds": ("inf", "nan", "0", "-1", "abc"),
                         "--autoscout-timeout": ("0", "inf", "-5", "nan"), "--autoscout-warmup": ("-1", "abc"),
                         "--autoscout-measure": ("0", "-2"), "--autoscout-confirm": ("-1", "x"),
                         "--autoscout-include": ("", ",", "bogus", "grad_accum"),
                         "--num_processes": ("0", "-1", "abc"), "--autoscout-report": ("",)}.items():
        for value in values:
            cases.append((f"launch {flag} {value!r}", [*launch, flag, value, str(script)]))
    cases.append(("launch --autoscout-store ''", ["launch", "--autoscout", "--autoscout-store", "", str(script)]))
    cases.append(("launch a missing script", [*launch, str(work / "nonesuch.py")]))
    cases.append(("launch with no script", [*launch]))
    return cases


def run_cli(what: str, argv: list[str], work: Path, hub: list[bytes]) -> Case:
    env = {**os.environ, "HF_ENDPOINT": os.environ["AUTOSCOUT_FAKE_HUB"], "HF_TOKEN": "hf_" + "x" * 30,
           "XDG_CACHE_HOME": str(work / "cache"), "HF_HOME": str(work / "hf"), "PYTHONPATH": str(REPO)}
    env.pop("HF_HUB_OFFLINE", None)
    before = len(hub)
    start = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, "-m", "autoscout_plugin.cli", *argv], capture_output=True,
                              text=True, timeout=120, env=env, cwd=work, check=False)
    except subprocess.TimeoutExpired:
        return Case("cli", what, "hang", time.perf_counter() - start)
    seconds = time.perf_counter() - start
    err = proc.stderr.strip().splitlines()
    last = err[-1] if err else ""
    if len(hub) > before:
        return Case("cli", what, "silent", seconds, f"contacted the Hub: {hub[-1][:60]!r}")
    if "Traceback (most recent call last)" in proc.stderr:
        return Case("cli", what, "traceback", seconds, last[:160])
    if proc.returncode == 2 and "error" in proc.stderr.lower():
        return Case("cli", what, "clear error", seconds, last[:160])
    return Case("cli", what, "silent", seconds, f"exit {proc.returncode}: {last[:140]}")


# ---------------------------------------------------------------- the Python options
def option_cases() -> list[tuple[str, str, dict[str, Any]]]:
    bad: dict[str, tuple[Any, ...]] = {
        "max_trials": (0, -1, 1.5, "8", True, math.inf), "max_seconds": (0, -1, math.inf, math.nan, "10", True),
        "max_fraction": (0, 1.5, -0.1, math.nan, "0.1"), "objective": ("", "speed", 5, None),
        "include": ("", [], ["nope"], "num_threads", [5], ["num_threads", "num_threads"], {"num_threads": 1}),
        "pin": ({"nope": 1}, [("num_threads", 1)], "x", 5, {"num_threads": "two"}, {"num_threads": 0}),
        "store": ("", 5, b"x"), "relaunch": ("no", 1, None, "false"), "report": ("", 5),
        "warmup_steps": (-1, 1.5, "2", None), "measure_steps": (0, -1, 2.5), "trial_timeout_s": (0, math.inf,
                                                                                               math.nan, "5", -1),
        "cut_below": (0, 1, 1.5, -0.5, "0.5", True), "confirm_top": (-1, "1", 1.5),
        "confirm_rounds": (0, -1, "2"), "patience": (0, -1, "3", 2.5), "seed": ("a", 1.5, None),
        "search": ("nope", "", 5), "progress": ("yes", 2, None)}
    cases = [("AutoScoutOptions", name, {name: value}) for name, values in bad.items() for value in values]
    bad_inference: dict[str, tuple[Any, ...]] = {
        "objective": ("", "speed", 3), "slo_p99_s": (0, -1, math.nan, math.inf, "0.5"),
        "memory_cap_mb": (0, -5, math.nan), "price_per_hour": (-1, math.nan, "1"), "max_trials": (0, -3, 2.5),
        "max_seconds": (0, math.inf), "include": ("", [], ["nope"], "batch_size"), "pin": ("x", {"nope": 1}),
        "check_outputs": ("no", 2), "min_agreement": (0, 1.5, math.nan), "warmup_batches": (-1, 1.5),
        "trial_timeout_s": (0, math.inf), "seed": ("a",), "report": ("", 7), "progress": ("yes",)}
    cases += [("InferenceOptions", name, {name: value}) for name, values in bad_inference.items() for value in values]
    cases += [("AutoScoutOptions", "unknown keyword", {"max_trails": 4}),
              ("InferenceOptions", "unknown keyword", {"objectiv": "throughput"})]
    return cases


def _atoms(value: Any) -> list[Any]:
    """A value and, for a list or a mapping, its items: an error may name the one item that is wrong."""
    if isinstance(value, dict):
        return [value, *value, *value.values()]
    return [value, *value] if isinstance(value, (list, tuple)) else [value]


def run_option(cls_name: str, name: str, kwargs: dict[str, Any]) -> Case:
    from autoscout_plugin.options import AutoScoutOptions
    from autoscout_plugin.serving import InferenceOptions

    cls = {"AutoScoutOptions": AutoScoutOptions, "InferenceOptions": InferenceOptions}[cls_name]
    what = f"{cls_name}({', '.join(f'{k}={v!r}' for k, v in kwargs.items())})"
    start = time.perf_counter()
    try:
        cls(**kwargs)
    except ValueError as exc:
        named = any(k in str(exc) or any(repr(a)[:40] in str(exc) for a in _atoms(v)) for k, v in kwargs.items())
        return Case("options", what, "clear error" if named else "traceback", time.perf_counter() - start,
                    str(exc)[:160])
    except TypeError as exc:  # Python's own answer to an unknown keyword names it; anything else is a crash
        clear = name == "unknown keyword" and "unexpected keyword argument" in str(exc)
        return Case("options", what, "clear error" if clear else "traceback", time.perf_counter() - start,
                    f"TypeError: {exc}"[:160])
    except Exception as exc:  # noqa: BLE001 - classified
        return Case("options", what, "traceback", time.perf_counter() - start, f"{type(exc).__name__}: {exc}"[:160])
    return Case("options", what, "silent", time.perf_counter() - start, "accepted")


# ---------------------------------------------------------------- the store and the report paths
def _tuning(work: Path, **options: Any) -> Any:
    from autoscout_plugin.batch import BatchSplit
    from autoscout_plugin.costmodel import Hardware, Workload
    from autoscout_plugin.options import AutoScoutOptions
    from autoscout_plugin.tuning import RunDescription, Tuning

    run = RunDescription(current={"strategy": "single", "num_processes": 1, "micro_batch_size": 8, "num_threads": 2},
                         knobs=("micro_batch_size", "num_threads"), hardware=Hardware(kind="cpu", cores=2),
                         workload=Workload(family="mlp", global_batch=16), split=BatchSplit(16, 8, 2, 1),
                         fixed={"strategy": "single", "num_processes": 1})
    opts = {"max_trials": 3, "progress": False, "confirm_top": 0, "patience": None, "warmup_steps": 0,
            "measure_steps": 1} | options
    return Tuning(AutoScoutOptions(**opts), run)


def _quick_trial(request: Any) -> Any:
    from autoscout_plugin.profiling import TrialOutcome

    return TrialOutcome(value=float(request.config["num_threads"] * 10 + request.config.get("micro_batch_size", 8)),
                        cost_s=0.01)


def store_cases(work: Path) -> list[tuple[str, Callable[[Path], tuple[bool, str]]]]:
    """Each case prepares a fault under its folder, runs a tuning flow, and says whether the run finished."""
    import sqlite3

    def finish(case_dir: Path, store: str | None = None, report: str | None = None,
               trial: Callable[[Any], Any] = _quick_trial, **options: Any) -> tuple[bool, str]:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            tuning = _tuning(case_dir, store=store, report=report, **options)
            result = tuning.run(trial)
            tuning.conclude(result, applied=result.best_config)
        said = [str(w.message) for w in caught if "AutoScout" in str(w.message)]
        return bool(said), (said[0] if said else "no warning")[:160]

    def seeded(case_dir: Path) -> Path:
        path = case_dir / "s.sqlite"
        finish(case_dir, store=str(path))
        with sqlite3.connect(path) as raw:
            raw.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return path

    def folder(d: Path) -> tuple[bool, str]:
        (d / "store").mkdir()
        return finish(d, store=str(d / "store"))

    def foreign(d: Path) -> tuple[bool, str]:
        (d / "notes.txt").write_text("my notes\n")
        ok = finish(d, store=str(d / "notes.txt"))
        return ok[0] and (d / "notes.txt").read_text() == "my notes\n", ok[1]

    def damaged_pages(d: Path) -> tuple[bool, str]:
        path = seeded(d)
        data = bytearray(path.read_bytes())
        data[4096:] = b"\xa5" * (len(data) - 4096)
        path.write_bytes(bytes(data))
        return finish(d, store=str(path))

    def truncated(d: Path) -> tuple[bool, str]:
        path = seeded(d)
        path.write_bytes(path.read_bytes()[:5000])
        return finish(d, store=str(path))

    def rows(d: Path, sql: str) -> tuple[bool, str]:
        """Damage a record, then run again so it is read: the study resumed (its winner dropped), and a
        new study of the same model (another space) warm-started from it."""
        path = seeded(d)
        with sqlite3.connect(path) as raw:
            raw.execute(sql)
            if "winner" not in sql:
                raw.execute("UPDATE studies SET winner_config = NULL, winner_value = NULL")
        told = [finish(d, store=str(path)), finish(d, store=str(path), include=("num_threads",))]
        return any(t for t, _ in told), next((why for t, why in told if t), told[0][1])

    def newer(d: Path) -> tuple[bool, str]:
        return rows(d, "UPDATE schema_version SET version = 99")

    def default_junk(d: Path) -> tuple[bool, str]:
        os.environ["XDG_CACHE_HOME"] = str(d / "cache")
        os.environ.pop("AUTOSCOUT_STORE", None)
        from autoscout_plugin.options import default_store

        Path(default_store()).parent.mkdir(parents=True)
        Path(default_store()).write_bytes(b"\x00junk")
        return finish(d)

    def breaks_mid_run(d: Path) -> tuple[bool, str]:
        calls: list[Any] = []

        def trial(request: Any) -> Any:
            calls.append(request)
            if len(calls) == 2:
                for path in d.glob("s.sqlite*"):
                    path.write_bytes(b"\xa5" * path.stat().st_size)
            return _quick_trial(request)

        return finish(d, store=str(d / "s.sqlite"), trial=trial)

    def report_folder(d: Path) -> tuple[bool, str]:
        (d / "r.json").mkdir()
        return finish(d, store=str(d / "s.sqlite"), report=str(d / "r"))

    def report_under_file(d: Path) -> tuple[bool, str]:
        (d / "f").write_text("")
        return finish(d, store=str(d / "s.sqlite"), report=str(d / "f" / "r"))

    def dotted_names(d: Path) -> tuple[bool, str]:
        for name in ("lr_0.001", "lr_0.01", "exp.v1", "exp.v2"):
            finish(d, store=str(d / "s.sqlite"), report=str(d / name))
        names = sorted(p.name for p in d.glob("*.json"))
        ok = names == ["exp.v1.json", "exp.v2.json", "lr_0.001.json", "lr_0.01.json"]
        return ok, ", ".join(names)

    return [("store path is a folder", folder), ("store path is someone's text file", foreign),
            ("store pages damaged", damaged_pages), ("store file truncated", truncated),
            ("trial record not UTF-8", lambda d: rows(d, "UPDATE trials SET data = CAST(X'FFFE' AS TEXT)")),
            ("trial record cut short", lambda d: rows(d, "UPDATE trials SET data = '{\"config\": '")),
            ("stored winner damaged", lambda d: rows(d, "UPDATE studies SET winner_config = '{x'")),
            ("study workload damaged", lambda d: rows(d, "UPDATE studies SET workload = CAST(X'C3' AS TEXT)")),
            ("store from a newer AutoScout", newer), ("junk at the default store path", default_junk),
            ("store breaks mid-run", breaks_mid_run), ("report path is a folder", report_folder),
            ("report folder under a file", report_under_file), ("report names with dots", dotted_names)]


def run_store_case(what: str, fn: Callable[[Path], tuple[bool, str]], work: Path) -> Case:
    case_dir = work / "store" / what.replace(" ", "_").replace("'", "")
    case_dir.mkdir(parents=True)
    saved = dict(os.environ)
    start = time.perf_counter()
    try:
        told, detail = fn(case_dir)
    except Exception as exc:  # noqa: BLE001 - classified
        return Case("store", what, "traceback", time.perf_counter() - start, f"{type(exc).__name__}: {exc}"[:160])
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return Case("store", what, "survived" if told else "silent", time.perf_counter() - start, detail)


# ---------------------------------------------------------------- trial faults
def trial_cases(work: Path) -> list[tuple[str, Callable[[], tuple[str, str]]]]:
    from autoscout_plugin.profiling import TrialOutcome, run_subprocess_trial
    from autoscout_plugin.profiling.deadline import wall_clock_limit

    stores: list[Path] = []

    def tuner_with(fault: Callable[[Any], Any], timeout_s: float = 2.0) -> tuple[str, str]:
        calls: list[Any] = []

        def trial(request: Any) -> Any:
            calls.append(request)
            if len(calls) == 2:
                with wall_clock_limit(timeout_s, "the trial"):
                    return fault(request)
            return _quick_trial(request)

        store = Path(tempfile.mkdtemp(dir=work)) / "trials.sqlite"
        stores.append(store)
        tuning = _tuning(work, store=str(store))
        result = tuning.run(trial)
        second = result.trials[1]
        return ("survived" if second.status != "ok" and len(result.trials) >= 3 else "silent",
                f"{second.status}: {second.error}"[:160])

    def nan(_: Any) -> Any:
        return TrialOutcome(value=math.nan, cost_s=0.1)

    def raise_(_: Any) -> Any:
        raise RuntimeError("boom in the trial")

    def oom(_: Any) -> Any:
        raise MemoryError("out of memory")

    def hang(_: Any) -> Any:
        time.sleep(1e6)

    def hang_in_thread() -> tuple[str, str]:
        box: dict[str, Any] = {}

        def polling(_: Any) -> Any:
            while True:
                time.sleep(0.01)

        worker = threading.Thread(target=lambda: box.setdefault("r", tuner_with(polling)), daemon=True)
        worker.start()
        worker.join(60)
        return ("hang", "still running after 60 s") if worker.is_alive() else box["r"]

    def child(code: str, timeout_s: float = 5.0) -> tuple[str, str]:
        out = run_subprocess_trial([sys.executable, "-c", textwrap.dedent(code)], timeout_s=timeout_s)
        return ("survived" if out.status != "ok" else "silent", f"{out.status}: {out.error}"[:160])

    def setsid_grandchild() -> tuple[str, str]:
        pid_file = work / "grandchild.pid"
        code = f"""
            import subprocess, sys, time
            p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True)
            open({str(pid_file)!r}, "w").write(str(p.pid))
            time.sleep(600)
        """
        status, detail = child(code, timeout_s=3.0)
        pid = int(pid_file.read_text())
        deadline = time.monotonic() + 10
        while _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        return ("orphan", f"grandchild {pid} still runs") if _alive(pid) else (status, detail)

    def secret() -> tuple[str, str]:
        os.environ["HF_TOKEN"] = "hf_" + "s3cr3t" * 5
        try:
            status, detail = tuner_with(lambda _: (_ for _ in ()).throw(
                PermissionError(f"401 for token {os.environ['HF_TOKEN']}")))
        finally:
            os.environ.pop("HF_TOKEN")
        stored = b"".join(p.read_bytes() for p in stores[-1].parent.glob("trials.sqlite*"))
        leaked = b"s3cr3ts3cr3t" in stored or "s3cr3t" in detail
        return ("silent", "the token reached the store") if leaked else (status, detail)

    return [("trial raises", lambda: tuner_with(raise_)), ("trial loss is NaN", lambda: tuner_with(nan)),
            ("trial runs out of memory", lambda: tuner_with(oom)),
            ("trial hangs in a sleep (main thread)", lambda: tuner_with(hang)),
            ("trial hangs polling, tuning in a worker thread", hang_in_thread),
            ("child process exits 1", lambda: child("raise SystemExit('bad config')")),
            ("child killed by SIGKILL (OOM killer)", lambda: child("import os, signal; os.kill(os.getpid(), 9)")),
            ("child writes a damaged result", lambda: child(
                "import os; open(os.environ['AUTOSCOUT_RESULT'], 'w').write('{\"status\": 7')")),
            ("child hangs; its grandchild runs in its own session", setsid_grandchild),
            ("trial error carries a token", secret)]


def _leftovers(folder: Path, within_s: float = 15.0) -> list[str]:
    """What is still in `folder` after `within_s` (the trial's supervisor removes the temp files once it
    has swept the processes, which may take its grace period)."""
    deadline = time.monotonic() + within_s
    while any(folder.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.1)
    return sorted(p.name for p in folder.iterdir())


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


def run_trial_case(what: str, fn: Callable[[], tuple[str, str]]) -> Case:
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            outcome, detail = fn()
        except Exception as exc:  # noqa: BLE001 - classified
            return Case("trial", what, "traceback", time.perf_counter() - start, f"{type(exc).__name__}: {exc}"[:160])
    return Case("trial", what, outcome, time.perf_counter() - start, detail)


# ---------------------------------------------------------------- stop signals
_DEFAULT_SIGHUP = [sys.executable, "-c", "import os, signal, sys; signal.signal(signal.SIGHUP, signal.SIG_DFL);"
                   " os.execv(sys.executable, [sys.executable, *sys.argv[1:]])"]
"""Python, with SIGHUP at its default as in a terminal (under nohup it would be inherited ignored)."""

_TUNER = """
import sys, time
from autoscout_plugin.profiling import run_subprocess_trial
child = '''
import subprocess, sys, time, os
a = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
b = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"], start_new_session=True)
open(sys.argv[1], "w").write(f"{os.getpid()} {a.pid} {b.pid}")
time.sleep(600)
'''
run_subprocess_trial([sys.executable, "-c", child, sys.argv[1]], timeout_s=600)
"""


def stop_case(sig: signal.Signals, work: Path) -> Case:
    """A tuner process mid-trial (a child with a grandchild and a grandchild in its own session) is sent
    `sig`; every process and temp file must go. SIGKILL and SIGSEGV (a crashing extension) give the
    tuner no chance to clean up: the trial's parent-death signal must."""
    what = f"{sig.name} to the tuner during a trial"
    case = work / "stop" / sig.name
    (case / "tmp").mkdir(parents=True)
    pids_file = case / "pids"
    env = {**os.environ, "TMPDIR": str(case / "tmp"), "PYTHONPATH": str(REPO)}
    outer = subprocess.Popen([*_DEFAULT_SIGHUP, "-c", _TUNER, str(pids_file)], env=env, start_new_session=True)
    start = time.perf_counter()
    deadline = time.monotonic() + 60
    while not pids_file.exists() or len(pids_file.read_text().split()) < 3:
        if time.monotonic() > deadline:
            outer.kill()
            return Case("stop", what, "hang", time.perf_counter() - start, "the trial never started")
        time.sleep(0.05)
    return _signal_and_count(outer, sig, [int(p) for p in pids_file.read_text().split()], case / "tmp", what, start)


def _signal_and_count(proc: subprocess.Popen[Any], sig: signal.Signals, pids: list[int], temp: Path, what: str,
                      start: float) -> Case:
    """Send `sig` to `proc`; then whether `pids` and every temp file in `temp` went (`orphan` if not)."""
    proc.send_signal(sig)
    sent = time.monotonic()
    while any(_alive(p) for p in pids) and time.monotonic() - sent < 30:
        time.sleep(0.05)
    gone_s = time.monotonic() - sent
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(30)
    left = [p for p in pids if _alive(p)]
    files = _leftovers(temp)
    for pid in left:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    if left or files or proc.returncode is None:
        return Case("stop", what, "orphan", time.perf_counter() - start,
                    f"left: processes {left}, files {files}, exit {proc.returncode}")
    return Case("stop", what, "survived", time.perf_counter() - start,
                f"exit {proc.returncode}; every process gone {gone_s:.1f} s after the signal; no temp file left")


_HANGING_SCRIPT = """
import json, os, subprocess, sys, time
import autoscout_plugin as autoscout

autoscout.knob("micro_batch_size", 8)
sleeper = [sys.executable, "-c", "import time; time.sleep(600)"]
pids = [os.getpid(), subprocess.Popen(sleeper).pid, subprocess.Popen(sleeper, start_new_session=True).pid]
open(sys.argv[1] + ".tmp", "w").write(json.dumps(pids))
os.replace(sys.argv[1] + ".tmp", sys.argv[1])
time.sleep(600)
"""


def launcher_stop_case(sig: signal.Signals, work: Path) -> Case:
    """The issue's own report: `autoscout launch --autoscout ...` sent `sig` while its first trial (a real
    `accelerate launch` whose script left a grandchild in its own session) runs."""
    what = f"{sig.name} to `autoscout launch --autoscout` during a trial"
    case = work / "launch-stop" / sig.name
    (case / "tmp").mkdir(parents=True)
    script, pids_file = case / "train.py", case / "pids.json"
    script.write_text(_HANGING_SCRIPT)
    env = {**os.environ, "TMPDIR": str(case / "tmp"), "PYTHONPATH": str(REPO), "HF_HOME": str(case / "hf")}
    argv = [*_DEFAULT_SIGHUP, "-m", "autoscout_plugin.cli", "launch", "--autoscout", "--autoscout-store",
            str(case / "s.sqlite"), "--autoscout-timeout", "300", "--num_processes", "1", str(script), str(pids_file)]
    start = time.perf_counter()
    launcher = subprocess.Popen(argv, env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 180
    while not pids_file.exists():
        if time.monotonic() > deadline or launcher.poll() is not None:
            launcher.kill()
            return Case("stop", what, "hang", time.perf_counter() - start, "the trial never started")
        time.sleep(0.1)
    return _signal_and_count(launcher, sig, json.loads(pids_file.read_text()), case / "tmp", what, start)


# ---------------------------------------------------------------- the table
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="cli,options,store,trial,stop")
    parser.add_argument("--json", help="write every case to this JSON file")
    args = parser.parse_args(argv)
    groups = set(args.only.split(","))
    cases: list[Case] = []
    with tempfile.TemporaryDirectory(prefix="autoscout-reliability-") as tmp:
        work = Path(tmp)
        if "options" in groups:
            cases += [run_option(*c) for c in option_cases()]
        if "store" in groups:
            cases += [run_store_case(what, fn, work) for what, fn in store_cases(work)]
        if "trial" in groups:
            cases += [run_trial_case(what, fn) for what, fn in trial_cases(work)]
        if "stop" in groups:
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGKILL, signal.SIGSEGV):
                cases.append(stop_case(sig, work))
            for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGKILL):
                cases.append(launcher_stop_case(sig, work))
        if "cli" in groups:
            with _fake_hub() as hub:
                cases += [run_cli(what, argv, work, hub) for what, argv in cli_cases(work)]
    for case in cases:
        mark = " " if case.outcome in GOOD else "!"
        print(f"{mark} {case.group:7} {case.outcome:11} {case.seconds:6.2f}s  {case.what}  | {case.detail}")
    print()
    print("| group | cases | clear error | survived | traceback | silent | hang | orphan | slowest refusal, s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for group in ("cli", "options", "store", "trial", "stop"):
        mine = [c for c in cases if c.group == group]
        if not mine:
            continue
        n = Counter(c.outcome for c in mine)
        refusals = [c.seconds for c in mine if c.outcome == "clear error"]
        slowest = f"{max(refusals):.2f}" if refusals else "-"
        print(f"| {group} | {len(mine)} | {n['clear error']} | {n['survived']} | {n['traceback']} | {n['silent']} |"
              f" {n['hang']} | {n['orphan']} | {slowest} |")
    if args.json:
        Path(args.json).write_text(json.dumps([c.__dict__ for c in cases], indent=1), encoding="utf-8")
    return 0 if all(c.outcome in GOOD for c in cases) else 1


if __name__ == "__main__":
    raise SystemExit(main())
