"""One validation layer for every option AutoScout takes: the Python options (`AutoScoutOptions`,
`InferenceOptions`, `TuneOptions`), the `autoscout` command line and the launcher's own options.

Each checker returns the value it accepted, unchanged, or raises `ValueError` with what was wrong, the
value given and what to do::

    max_fraction must be a fraction in (0, 1], got 1.5: the share of the planned main run tuning may take, ...

The rules: integers are `int` (never `bool`, never a float such as 2.0), numbers are `int` or `float`
and finite (NaN and infinity are refused), a flag is `True` or `False` (never "no" or 1), a text or a
path is a non-empty string without NUL characters, a list of names is a list (not a string) of known,
distinct names, and a key given twice is refused. Every bound that exists is stated in the message.

`arg(...)` and its helpers turn the same checkers into argparse `type=` functions, so the command
line refuses a bad value with argparse's clean `error:` (exit code 2), never a traceback; nothing here
imports a framework, so a refusal takes milliseconds.

Example:
    >>> fraction("max_fraction", 0.25)
    0.25
    >>> fraction("max_fraction", 1.5, hint="the share of the main run tuning may take, e.g. 0.05")
    Traceback (most recent call last):
    ...
    ValueError: max_fraction must be a fraction in (0, 1], got 1.5: the share of the main run tuning may take, e.g. 0.05
    >>> boolean("relaunch", "no")
    Traceback (most recent call last):
    ...
    ValueError: relaunch must be True or False, got 'no'
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import math
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, ClassVar, NoReturn

MAX_SEED = 2**32 - 1
"""Seeds are 0 .. 2**32 - 1: what every search strategy's random generator accepts (numpy's range)."""
MAX_TIMEOUT_S = 7 * 24 * 3600.0
"""A trial's timeout is at most a week: the OS timers behind it overflow on absurd values (1e12 s)."""


# ------------------------------------------------------------------ messages
def message(name: str | None, requirement: str, value: Any, hint: str | None = None) -> str:
    """`"{name} must be {requirement}, got {value!r}: {hint}"` (no name: for argparse, which names
    the option itself)."""
    head = f"{name} must be" if name else "must be"
    return f"{head} {requirement}, got {_show(value)}" + (f": {hint}" if hint else "")


def fail(name: str | None, requirement: str, value: Any, hint: str | None = None) -> NoReturn:
    raise ValueError(message(name, requirement, value, hint))


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _finite(value: int | float) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:  # an int too large for a float
        return False


def _int_requirement(low: int | None, high: int | None) -> str:
    if low is not None and high is not None:
        return f"an integer from {low} to {high}"
    if low is not None:
        return f"an integer >= {low}"
    if high is not None:
        return f"an integer <= {high}"
    return "an integer"


# ------------------------------------------------------------------ checkers
def integer(name: str | None, value: Any, *, low: int | None = None, high: int | None = None,
            requirement: str | None = None, hint: str | None = None, optional: bool = False) -> Any:
    """An `int` (not a bool, not 2.0) within `[low, high]`; None passes when `optional`.

    Example:
        >>> integer("warmup_steps", 0, low=0), integer("max_trials", None, low=1, optional=True)
        (0, None)
        >>> integer("measure_steps", 2.0, low=1)
        Traceback (most recent call last):
        ...
        ValueError: measure_steps must be an integer >= 1, got 2.0
    """
    if value is None and optional:
        return None
    if not _is_int(value) or (low is not None and value < low) or (high is not None and value > high):
        fail(name, requirement or _int_requirement(low, high), value, hint)
    return value


def positive_int(name: str | None, value: Any, *, low: int = 1, high: int | None = None,
                 requirement: str | None = None, hint: str | None = None, optional: bool = False) -> Any:
    """`integer` with a lower bound of 1 unless told otherwise."""
    return integer(name, value, low=low, high=high, requirement=requirement, hint=hint, optional=optional)


def finite_number(name: str | None, value: Any, *, low: float | None = None, high: float | None = None,
                  low_open: bool = False, high_open: bool = False, requirement: str | None = None,
                  hint: str | None = None, optional: bool = False) -> Any:
    """An `int` or `float` (not a bool, not a string), finite, within the bounds (`low_open`: `> low`).

    Example:
        >>> finite_number("min_improvement", 0.02, low=0)
        0.02
        >>> finite_number("max_seconds", float("inf"), low=0, low_open=True, requirement="a positive number")
        Traceback (most recent call last):
        ...
        ValueError: max_seconds must be a finite number (a positive number), got inf
    """
    if value is None and optional:
        return None
    if requirement is None:
        parts = []
        if low is not None:
            parts.append(f"{'>' if low_open else '>='} {low:g}")
        if high is not None:
            parts.append(f"{'<' if high_open else '<='} {high:g}")
        requirement = "a number" + (" " + " and ".join(parts) if parts else "")
    if not _is_number(value):
        fail(name, requirement, value, hint)
    if not _finite(value):
        fail(name, f"a finite number ({requirement})", value, hint)
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and (value >= high if high_open else value > high)
    if too_low or too_high:
        fail(name, requirement, value, hint)
    return value


def positive_number(name: str | None, value: Any, *, high: float | None = None, unit: str = "",
                    requirement: str | None = None, hint: str | None = None, optional: bool = False) -> Any:
    """A finite number > 0 (and <= `high`).

    Example:
        >>> positive_number("trial_timeout_s", 0, unit="seconds")
        Traceback (most recent call last):
        ...
        ValueError: trial_timeout_s must be a positive number of seconds, got 0
    """
    if requirement is None:
        requirement = "a positive number" + (f" of {unit}" if unit else "")
        if high is not None:
            requirement += f" (at most {high:g})"
    return finite_number(name, value, low=0, low_open=True, high=high, requirement=requirement, hint=hint,
                         optional=optional)


def fraction(name: str | None, value: Any, *, include_high: bool = True, requirement: str | None = None,
             hint: str | None = None, optional: bool = False) -> Any:
    """A finite number in (0, 1] (or (0, 1) with `include_high=False`)."""
    requirement = requirement or f"a fraction in (0, 1{']' if include_high else ')'}"
    return finite_number(name, value, low=0, low_open=True, high=1, high_open=not include_high,
                         requirement=requirement, hint=hint, optional=optional)


def boolean(name: str | None, value: Any, *, hint: str | None = None) -> bool:
    """`True` or `False` only: "no", "false", 0 and 1 are refused (`bool("no")` is True)."""
    if not isinstance(value, bool):
        fail(name, "True or False", value, hint)
    return value


def non_empty_str(name: str | None, value: Any, *, hint: str | None = None, optional: bool = False,
                  requirement: str = "a non-empty string") -> Any:
    """A string with something besides blanks in it, and no NUL character."""
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value.strip() or "\x00" in value:
        fail(name, requirement, value, hint)
    return value


def path(name: str | None, value: Any, *, optional: bool = False, hint: str | None = None,
         file: bool = False) -> Any:
    """A file path (a `str` or `os.PathLike`): not empty, no NUL; with `file`, not an existing directory.
    The value is returned as given."""
    if value is None and optional:
        return None
    text = os.fspath(value) if isinstance(value, os.PathLike) else value
    if not isinstance(text, str) or not text.strip() or "\x00" in text:
        fail(name, "a file path (a non-empty string)", value, hint)
    if file and os.path.isdir(text):
        fail(name, "a file path, not a directory", value, hint or "name a file inside it")
    return value


def executor(name: str | None, value: Any, *, optional: bool = False) -> Any:
    """Where parallel trials run: `local`, `ray[:ADDRESS]` or `slurm[:OPTIONS]`, with what it needs installed.

    Example:
        >>> executor("executor", "kubernetes")
        Traceback (most recent call last):
        ...
        ValueError: executor: unknown executor 'kubernetes': use local, ray[:ADDRESS] or slurm[:OPTIONS]
    """
    if value is None and optional:
        return None
    from .parallel import parse_executor

    try:
        parse_executor(value)
    except ValueError as exc:
        raise ValueError(f"{name}: {exc}") from None
    return value


def store(name: str | None, value: Any, *, optional: bool = False, hint: str | None = None,
          file: bool = False) -> Any:
    """A trial store: a file path (see `path`), or a URL (`postgresql://user@host:port/db`, `sqlite:///path`)
    that can be read. A URL's password never appears in the error. The value is returned as given."""
    if value is None and optional:
        return None
    text = os.fspath(value) if isinstance(value, os.PathLike) else value
    if isinstance(text, str) and "://" in text:
        from .redact import redact
        from .store import StoreError, is_postgres_url, store_path
        from .store.postgres import _parse

        problem = None
        if is_postgres_url(text):
            try:
                _parse(text)
            except StoreError as exc:
                problem = str(exc)
        elif store_path(text) is None:
            problem = ("AutoScout reads postgresql://user@host:port/database URLs, sqlite:///relative/path and"
                       " sqlite:////absolute/path URLs, and file paths")
        if problem:
            raise ValueError(f"{name} must be a trial store (a file path or a postgresql:// URL), got"
                             f" {redact(text)!r}: {problem}")
        return value
    return path(name, value, optional=optional, hint=hint, file=file)


def choice(name: str | None, value: Any, choices: Sequence[Any], *, hint: str | None = None) -> Any:
    """One of `choices`, exactly (no case folding)."""
    if not isinstance(value, type(choices[0])) or value not in choices or isinstance(value, bool):
        fail(name, "one of " + ", ".join(map(str, choices)), value, hint)
    return value


def suggest(word: Any, known: Iterable[str], few: int = 8) -> str:
    """Close matches first, then others: `"n_layer, n_head, ..."` for an error message."""
    known = sorted(known)
    close = difflib.get_close_matches(str(word), known, n=3, cutoff=0.6)
    rest = [k for k in known if k not in close]
    shown = close + rest[: max(few - len(close), 0)]
    return ", ".join(shown) + (", ..." if len(shown) < len(known) else "")


def names(name: str | None, value: Any, *, known: Iterable[str], what: str = "knob",
          unknown_message: Callable[[str], str] | None = None, optional: bool = False,
          hint: str | None = None) -> tuple[str, ...] | None:
    """A list of distinct known names (a list, tuple or set of strings; a plain string is refused,
    since it would be read letter by letter); returned as a tuple."""
    if value is None and optional:
        return None
    if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple, set, frozenset)):
        what_of = f"the string {value!r}" if isinstance(value, str) else _show(value)
        raise ValueError(f"{name} must be a list of {what} names, got {what_of}"
                         + (f": {hint}" if hint else f"; e.g. [{', '.join(repr(k) for k in sorted(known)[:2])}]"))
    items = tuple(value)
    if not items:
        raise ValueError(f"{name} is empty: nothing to tune; give {what} names, or None for all")
    known = set(known)
    seen: set[str] = set()
    for item in items:
        if not isinstance(item, str):
            fail(name, f"a list of {what} names (strings)", value, hint)
        if item not in known:
            raise ValueError(unknown_message(item) if unknown_message else
                             f"unknown {what} {item!r} in {name}; known: {suggest(item, known)}")
        if item in seen:
            raise ValueError(f"{what} {item!r} is listed twice in {name}; list each {what} once")
        seen.add(item)
    return items


def knob_names(name: str | None, value: Any, *, known: Iterable[str], **kwargs: Any) -> tuple[str, ...] | None:
    """`names` for knobs."""
    return names(name, value, known=known, what="knob", **kwargs)


def unique_keys(name: str, pairs: Iterable[tuple[str, Any]]) -> dict[str, Any]:
    """`{key: value}` of `(key, value)` pairs; a key given twice is refused (the last would silently win).

    Example:
        >>> unique_keys("--set", [("n_layer", 2), ("n_layer", 4)])
        Traceback (most recent call last):
        ...
        ValueError: --set gives 'n_layer' twice (2 and 4); give each key once
    """
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"{name} gives {key!r} twice ({out[key]!r} and {value!r}); give each key once")
        out[key] = value
    return out


def mapping(name: str, value: Any, *, hint: str | None = None) -> Mapping[str, Any]:
    """A mapping with string keys."""
    if not isinstance(value, Mapping):
        fail(name, "a mapping of name -> value (a dict)", value, hint)
    bad = [k for k in value if not isinstance(k, str)]
    if bad:
        fail(name, "a mapping with string keys", bad[0], hint)
    return value


def seed(name: str | None, value: Any) -> Any:
    """A random seed: an integer in [0, 2**32 - 1]."""
    return integer(name, value, low=0, high=MAX_SEED, hint="any integer in that range; the same seed repeats a run")


class KeywordOptions:
    """Base of an options dataclass: a positional value, or an unknown or misspelt option name, is a
    `ValueError` naming it (with the options there are), not the dataclass's `TypeError`."""

    __slots__ = ()
    EXAMPLE: ClassVar[str] = "max_trials=8"
    """An option as the error shows it."""

    def __new__(cls, /, *args: Any, **kwargs: Any) -> Any:
        if args:
            raise ValueError(f"{cls.__name__} takes keyword options only (e.g. {cls.EXAMPLE}), got {len(args)}"
                             " positional value(s)")
        known_fields(cls.__name__, kwargs, (f.name for f in dataclasses.fields(cls)))  # type: ignore[arg-type]
        return object.__new__(cls)


def known_fields(owner: str, given: Mapping[str, Any], known: Iterable[str]) -> None:
    """Refuse keyword options `owner` does not have (a typo would otherwise be a TypeError)."""
    known = list(known)
    for key in given:
        if key not in known:
            raise ValueError(f"{owner} has no option {key!r}; its options are: {suggest(key, known, few=40)}")


# ------------------------------------------------------------------ argparse
def arg(check: Callable[..., Any], parse: Callable[[str], Any] = lambda text: text, **kwargs: Any
        ) -> Callable[[str], Any]:
    """An argparse `type=` for `check`: `parse` reads the text, `check(None, value, **kwargs)` judges it.
    argparse prints `argument --x: must be ..., got ...` and exits with code 2."""
    def convert(text: str) -> Any:
        try:
            return check(None, parse(text), **kwargs)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    convert.__name__ = getattr(check, "__name__", "value")
    return convert


def _read_int(requirement: str, hint: str | None) -> Callable[[str], int]:
    def read(text: str) -> int:
        if not re.fullmatch(r"\s*[+-]?[0-9]+\s*", text):
            fail(None, requirement, text, hint)
        return int(text)
    return read


def _read_float(requirement: str, hint: str | None) -> Callable[[str], float]:
    def read(text: str) -> float:
        try:
            return float(text)
        except ValueError:
            fail(None, requirement, text, hint)
    return read


def int_arg(low: int | None = 1, high: int | None = None, *, hint: str | None = None) -> Callable[[str], int]:
    """An argparse type: an integer in `[low, high]`.

    Example:
        >>> int_arg(1, 8)("4")
        4
        >>> int_arg(1, 8)("0")
        Traceback (most recent call last):
        ...
        argparse.ArgumentTypeError: must be an integer from 1 to 8, got 0
    """
    requirement = _int_requirement(low, high)
    return arg(integer, _read_int(requirement, hint), low=low, high=high, hint=hint)


def number_arg(*, low: float = 0.0, high: float | None = None, unit: str = "", hint: str | None = None
               ) -> Callable[[str], float]:
    """An argparse type: a finite number > `low` (and <= `high`)."""
    requirement = ("a positive number" if low == 0 else f"a number > {low:g}") + (f" of {unit}" if unit else "")
    requirement += f" (at most {high:g})" if high is not None else ""
    return arg(finite_number, _read_float(requirement, hint), low=low, low_open=True, high=high,
               requirement=requirement, hint=hint)


def text_arg(*, hint: str | None = None) -> Callable[[str], str]:
    """An argparse type: a non-empty string."""
    return arg(non_empty_str, hint=hint)


def path_arg(*, hint: str | None = None, file: bool = False) -> Callable[[str], str]:
    """An argparse type: a file path (not empty, no NUL)."""
    return arg(path, hint=hint, file=file)


def seed_arg() -> Callable[[str], int]:
    return arg(seed, _read_int(_int_requirement(0, MAX_SEED), None))


def names_arg(known: Sequence[str], *, what: str = "knob") -> Callable[[str], tuple[str, ...]]:
    """An argparse type: comma-separated distinct names from `known` (an empty list is refused).

    Example:
        >>> names_arg(["batch_size", "precision"])("precision,batch_size")
        ('precision', 'batch_size')
    """
    def read(text: str) -> list[str]:
        items = [item.strip() for item in text.split(",")]
        if not any(items):
            raise ValueError(f"names no {what}, got {text!r}: give comma-separated {what}s such as "
                             f"{','.join(known[:2])}")
        if not all(items):
            raise ValueError(f"has an empty {what} name in {text!r}: give comma-separated {what}s")
        return items

    def check(_name: None, items: list[str]) -> tuple[str, ...]:
        for i, item in enumerate(items):
            if item not in known:
                raise ValueError(f"has an unknown {what} {item!r}; the {what}s are {', '.join(known)}")
            if item in items[:i]:
                raise ValueError(f"lists {item!r} twice; list each {what} once")
        return tuple(items)

    return arg(check, read)


MAX_TOKENS = 2**20
"""A prompt or output length is at most 1,048,576 tokens."""


def lengths(name: str, text: str, *, low: int = 1, high: int = MAX_TOKENS) -> int | tuple[int, int] | list[int]:
    """`N`, `LOW:HIGH` or `A,B,C` token counts, each in `[low, high]` (LOW <= HIGH).

    Example:
        >>> lengths("--prompt-len", "16:64"), lengths("--output-len", "8"), lengths("--prompt-len", "4,8")
        ((16, 64), 8, [4, 8])
        >>> lengths("--prompt-len", "64:16")
        Traceback (most recent call last):
        ...
        ValueError: --prompt-len must be N, LOW:HIGH or A,B,C with LOW <= HIGH, got '64:16': write it as 16:64
    """
    requirement = f"N, LOW:HIGH or A,B,C token counts from {low} to {high}"
    if not isinstance(text, str):
        fail(name, requirement, text)
    if ":" in text:
        parts = text.split(":")
    elif "," in text:
        parts = text.split(",")
    else:
        parts = [text]
    if any(not re.fullmatch(r"\s*[0-9]+\s*", p) for p in parts) or (":" in text and len(parts) != 2):
        fail(name, "N, LOW:HIGH or A,B,C", text, f"token counts from {low} to {high}, e.g. 16:64")
    values = [int(p) for p in parts]
    if any(v < low or v > high for v in values):
        fail(name, requirement, text)
    if ":" in text:
        if values[0] > values[1]:
            fail(name, "N, LOW:HIGH or A,B,C with LOW <= HIGH", text, f"write it as {values[1]}:{values[0]}")
        return (values[0], values[1])
    return values if "," in text else values[0]


def lengths_arg() -> Callable[[str], Any]:
    return arg(lambda _name, text: lengths(None, text), str)  # type: ignore[arg-type]


# ------------------------------------------------------------------ model config overrides (`--set`)
LOADER_KEYS = frozenset({
    "trust_remote_code", "revision", "code_revision", "token", "use_auth_token", "cache_dir", "force_download",
    "resume_download", "local_files_only", "proxies", "subfolder", "mirror", "config", "kwargs", "model_args",
    "pretrained_model_name_or_path", "name_or_path", "device_map", "max_memory", "offload_folder",
    "offload_state_dict", "offload_buffers", "quantization_config", "low_cpu_mem_usage", "use_safetensors",
    "weights_only", "from_tf", "from_flax", "output_loading_info", "adapter_kwargs", "adapter_name", "gguf_file",
    "key_mapping", "tp_plan", "tp_size", "device_mesh", "state_dict", "variant", "return_unused_kwargs",
    "ignore_mismatched_sizes", "disable_mmap", "fusion_config", "auto_map", "model_type", "transformers_version",
    "dtype", "torch_dtype", "attn_implementation", "device", "distributed_config", "generation_config",
})
"""Keys `--set` never takes: loading options of `from_pretrained` (`trust_remote_code` would run code
from the checkpoint; `revision`, `token`, ... reach the network), what `autoscout infer` tunes itself
(`dtype`, `attn_implementation`) and a config's identity (`model_type`, `auto_map`)."""
MAX_SIZE = 2**20
"""A size in `--set` (layers, width, heads, vocabulary, positions) is at most 1,048,576."""
_SIZE_KEY = re.compile(r"^(n|num)_|(_size|_dim|_layers|_heads|_positions)$|^max_position_embeddings$")


def is_size_key(key: str) -> bool:
    """A config key that counts something (`n_layer`, `hidden_size`, `num_attention_heads`, ...).

    Example:
        >>> [is_size_key(k) for k in ("n_layer", "hidden_size", "num_key_value_heads", "rms_norm_eps")]
        [True, True, True, False]
    """
    return bool(_SIZE_KEY.search(key))


def config_value(key: str, raw: str) -> Any:
    """The value of `--set key=raw`: an int, a finite float, true/false, none, or the text; a size key
    takes a positive integer (or none)."""
    text = raw.strip()
    if not text:
        raise ValueError(f"--set {key}= has no value: write {key}=VALUE")
    lowered = text.lower()
    if lowered in ("none", "null"):
        return None
    if lowered in ("true", "false"):
        value: Any = lowered == "true"
    elif re.fullmatch(r"[+-]?[0-9]+", text):
        value = int(text)
    else:
        try:
            value = float(text)
        except ValueError:
            value = text
        else:
            if not math.isfinite(value):
                raise ValueError(f"--set {key} must be a finite number, got {text!r}")
    if is_size_key(key) and (not _is_int(value) or not 1 <= value <= MAX_SIZE):
        raise ValueError(f"--set {key} is a size and must be an integer from 1 to {MAX_SIZE}, got {text!r}: give"
                         f" a positive count such as {key}=2")
    return value


def config_override(text: str) -> tuple[str, Any]:
    """`--set KEY=VALUE` checked without the model's config: the syntax, no loading option, a positive
    size. Whether the config has KEY is checked when the config is loaded (`build_model`).

    Example:
        >>> config_override("n_layer=2")
        ('n_layer', 2)
        >>> config_override("trust_remote_code=true")  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: --set trust_remote_code: a loading option, not a model config setting; ...
    """
    if not isinstance(text, str) or "=" not in text:
        raise ValueError(f"--set takes KEY=VALUE (a model config setting such as n_layer=2), got {text!r}")
    key, _, raw = text.partition("=")
    key = key.strip()
    if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", key):
        raise ValueError(f"--set key {key!r} is not a config setting name: write KEY=VALUE, e.g. n_layer=2")
    if key in LOADER_KEYS:
        tuned = key in ("dtype", "torch_dtype", "attn_implementation")
        raise ValueError(f"--set {key}: " + ("autoscout infer tunes this itself: use --include precision or "
                                             "--include attn_implementation instead" if tuned else
                                             "a loading option, not a model config setting; autoscout infer "
                                             "never passes loading options (nor runs code from a checkpoint): "
                                             "drop it"))
    return key, config_value(key, raw)


def config_override_arg() -> Callable[[str], str]:
    """An argparse type for `--set`: checks the text, returns it unchanged."""
    def check(_name: None, text: str) -> str:
        config_override(text)
        return text
    return arg(check)


__all__ = ["LOADER_KEYS", "MAX_SEED", "MAX_SIZE", "MAX_TIMEOUT_S", "MAX_TOKENS", "arg", "boolean", "choice",
           "config_override", "config_override_arg", "config_value", "fail", "finite_number", "fraction", "int_arg",
           "integer", "is_size_key", "knob_names", "known_fields", "lengths", "lengths_arg", "mapping", "message",
           "names", "names_arg", "non_empty_str", "number_arg", "path", "path_arg", "positive_int", "positive_number",
           "seed", "seed_arg", "suggest", "text_arg", "unique_keys"]
