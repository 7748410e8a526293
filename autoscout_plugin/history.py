"""Moving trial history between stores: a user's SQLite history into a shared PostgreSQL store, and back.

`migrate(src, dst)` copies every study of `src` (its descriptions, trials in order and winner) and every
note into `dst`; `show(store)` lists a store's studies. Both take a path or a URL, as `open_store` does,
and back `autoscout history migrate SRC DST` and `autoscout history show STORE`.

What a migration does, study by study, oldest first:
- a study `dst` lacks is created with the same fingerprint and descriptions; its trials are added in
  number order (`dst` numbers them again, 0, 1, 2, ..., in the same order) and its winner is set;
- a study `dst` already holds is "already there" and left alone, so a migration is safe to run twice. One
  exception: when `dst` holds the first trials of the source study and nothing else (a migration that was
  interrupted), the rest is added;
- notes are copied when `dst` has no note under their key; claims (configs running now) are not copied.

`src` is only read: a missing SQLite file is refused rather than created, and `src` == `dst` is refused.
Every location printed or put in an error has its password masked (`describe_store`).

Example:
    >>> import tempfile, pathlib
    >>> from autoscout_plugin.store import open_store
    >>> from autoscout_plugin.trial import Trial
    >>> folder = pathlib.Path(tempfile.mkdtemp())
    >>> with open_store(folder / "mine.sqlite") as store:
    ...     sid = store.open_study("fp", workload={"family": "mlp"}, hardware={}, space={})
    ...     store.add_trial(sid, Trial(config={"num_threads": 2}, value=10.0))
    ...     store.set_winner(sid, {"num_threads": 2}, 10.0)
    0
    >>> migrate(folder / "mine.sqlite", folder / "shared.sqlite").studies_copied
    1
    >>> migrate(folder / "mine.sqlite", folder / "shared.sqlite").studies_skipped
    1
"""

from __future__ import annotations

import json
import os
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from .store import SQLStore, StoreError, describe_store, is_postgres_url, open_store, store_path
from .trial import Trial

_LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1", ""})
"""Names of this machine in a URL: two URLs that differ only in these name the same server."""
_POSTGRES_PORT = 5432


@dataclass(frozen=True, slots=True, kw_only=True)
class MigrationReport:
    """What `migrate` copied.

    Example:
        >>> MigrationReport(source="a.sqlite", destination="b.sqlite", studies_copied=1, trials=3,
        ...                 winners=1).summary()
        'copied 1 study (3 trials, 1 winner, 0 notes) from a.sqlite to b.sqlite'
    """

    source: str
    """Where the history came from, safe to print (a URL's password masked)."""
    destination: str
    """Where it went, safe to print."""
    studies_copied: int = 0
    """Studies created in the destination, or completed there after an interrupted migration."""
    studies_skipped: int = 0
    """Studies "already there": the destination held them (with trials) and they were left as they were."""
    trials: int = 0
    """Trials added to the destination."""
    winners: int = 0
    """Winners set in the destination."""
    notes: int = 0
    """Notes added to the destination (keys it lacked)."""

    def summary(self) -> str:
        """One line for the command line."""
        text = (f"copied {_count(self.studies_copied, 'study', 'studies')} ({_count(self.trials, 'trial')}, "
                f"{_count(self.winners, 'winner')}, {_count(self.notes, 'note')}) from {self.source} to "
                f"{self.destination}")
        if self.studies_skipped:
            there = _count(self.studies_skipped, "study", "studies")
            text += f"; {there} already there"
        return text


def migrate(src: str | os.PathLike[str], dst: str | os.PathLike[str]) -> MigrationReport:
    """Copy the trial history of `src` into `dst` (see the module's docstring); `src` is only read.

    Args:
        src: The store to copy from: an existing SQLite file (path or `sqlite:///` URL) or a
            `postgresql://` URL.
        dst: The store to copy into; a new SQLite file is created, a PostgreSQL database must exist.

    Raises:
        StoreError: `src` is missing or not a trial store, `src` and `dst` are the same store, a URL
            cannot be read, or a store cannot be opened; the message masks any password.
    """
    source_where, target_where = _location(src), _location(dst)
    if source_where is not None and _same(source_where, target_where):
        raise StoreError(
            f"the source and destination are the same trial store ({describe_store(src)} and "
            f"{describe_store(dst)}); pass another destination to copy the history into"
        )
    _require_existing(src, source_where, "source")
    counts = {"studies_copied": 0, "studies_skipped": 0, "trials": 0, "winners": 0, "notes": 0}
    with closing(open_store(src)) as source, closing(open_store(dst)) as target:
        present = {study["fingerprint"]: study for study in target.studies()}
        for study in source.studies():
            trials, winner = _copy_study(study, source.trials(study["id"]), target,
                                         present.get(study["fingerprint"]))
            if trials is None:
                counts["studies_skipped"] += 1
                continue
            counts["studies_copied"] += 1
            counts["trials"] += trials
            counts["winners"] += winner
        counts["notes"] = _copy_notes(source, target)
    return MigrationReport(source=describe_store(src), destination=describe_store(dst), **counts)


def show(spec: str | os.PathLike[str]) -> str:
    """A store's studies, one line each (id, trials, winner value, workload family and name), under a
    header naming the store (its password masked). A missing SQLite file is refused, not created.

    Example:
        >>> import tempfile, pathlib
        >>> from autoscout_plugin.store import open_store
        >>> from autoscout_plugin.trial import Trial
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "trials.sqlite"
        >>> with open_store(path) as store:
        ...     sid = store.open_study("fp", workload={"family": "mlp"}, hardware={}, space={})
        ...     store.add_trial(sid, Trial(config={"num_threads": 2}, value=10.0))
        ...     store.set_winner(sid, {"num_threads": 2}, 10.0)
        0
        >>> print(show(path).replace(str(path), "trials.sqlite"))
        trials.sqlite: 1 study, 1 trial, 0 notes
          study-1     1 trial  winner 10           mlp
    """
    _require_existing(spec, _location(spec), "trial")
    with closing(open_store(spec)) as store:
        studies = [(study, len(store.trials(study["id"]))) for study in store.studies()]
        n_notes = len(store.notes())
    n_trials = sum(n for _, n in studies)
    lines = [f"{describe_store(spec)}: {_count(len(studies), 'study', 'studies')}, {_count(n_trials, 'trial')},"
             f" {_count(n_notes, 'note')}"]
    width = max((len(study["id"]) for study, _ in studies), default=0)
    for study, n in studies:
        best = _winner(study)
        winner = f"winner {best[1]:.6g}" if best else "no winner"
        about = "  ".join(str(study["workload"][key]) for key in ("family", "name") if study["workload"].get(key))
        lines.append(f"  {study['id']:{width}}  {_count(n, 'trial'):>10}  {winner:18}  {about}".rstrip())
    return "\n".join(lines)


# ------------------------------------------------------------------ copying
def _copy_study(study: dict[str, Any], trials: list[Trial], target: SQLStore,
                present: dict[str, Any] | None) -> tuple[int | None, int]:
    """Copy one study into `target`: (trials added, winners set), or (None, 0) when it is already there."""
    winner = _winner(study)
    if present is None:
        study_id = target.open_study(study["fingerprint"], workload=study["workload"], hardware=study["hardware"],
                                     space=study["space"])
        rest = trials
    else:
        study_id = present["id"]
        done = target.trials(study_id)
        if [_content(t) for t in done] != [_content(t) for t in trials[:len(done)]]:
            return None, 0  # the destination has its own history of this problem: it wins
        rest = trials[len(done):]
        if winner == _winner(present):
            winner = None
        if not rest and winner is None:
            return None, 0
    for trial in rest:
        target.add_trial(study_id, trial)
    if winner is not None:
        target.set_winner(study_id, winner[0], winner[1])
    return len(rest), int(winner is not None)


def _winner(study: dict[str, Any]) -> tuple[dict[str, Any], float] | None:
    """The study's (config, value), or None: no winner, or a damaged one (`studies()` checks only the config)."""
    config, value = study["winner"] or (None, None)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not isinstance(config, dict):
        return None
    return config, float(value)


def _copy_notes(source: SQLStore, target: SQLStore) -> int:
    have = target.notes()
    copied = 0
    for key, value in source.notes().items():
        if key not in have:
            target.set_note(key, value)
            copied += 1
    return copied


def _content(trial: Trial) -> str:
    """A trial's fields but its number, as text (NaN compares equal to NaN here)."""
    data = trial.to_json()
    data.pop("number")
    return json.dumps(data, sort_keys=True)


# ------------------------------------------------------------------ locations
def _location(spec: str | os.PathLike[str]) -> tuple[str, ...] | Path | None:
    """What `spec` points at: a resolved file path, (host, port, database) of a server, or None when
    `spec` is not a location `open_store` reads (it refuses it with its own message)."""
    text = os.fspath(spec)
    if is_postgres_url(text):
        try:
            url = sa.engine.make_url(text)
        except (sa.exc.ArgumentError, ValueError):
            return None
        host = str(url.host or url.query.get("host") or "").lower()
        return ("postgresql", "localhost" if host in _LOCAL_HOSTS else host, str(url.port or _POSTGRES_PORT),
                str(url.database))
    path = store_path(text)
    return Path(os.path.realpath(path)) if path else None


def _same(a: tuple[str, ...] | Path, b: tuple[str, ...] | Path | None) -> bool:
    if isinstance(a, Path) and isinstance(b, Path) and a.exists() and b.exists():
        return os.path.samefile(a, b)  # hard links too
    return a == b


def _require_existing(spec: str | os.PathLike[str], where: tuple[str, ...] | Path | None, role: str) -> None:
    """Refuse a store file that does not exist (or is empty) before `open_store` would create one there."""
    if not isinstance(where, Path):
        return
    if not where.exists():
        raise StoreError(
            f"the {role} store {describe_store(spec)} does not exist; pass the path of an existing trial store"
            " (AutoScout's default is ~/.cache/autoscout/trials.sqlite, or $AUTOSCOUT_STORE)"
        )
    if where.is_file() and where.stat().st_size == 0:
        raise StoreError(f"the {role} store {describe_store(spec)} is an empty file, not a trial store; "
                         "pass the path of a store AutoScout has written")


def _count(n: int, singular: str, plural: str | None = None) -> str:
    return f"{n} {singular if n == 1 else plural or singular + 's'}"


__all__ = ["MigrationReport", "migrate", "show"]
