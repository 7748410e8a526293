"""Errors raised by the trial store."""

from __future__ import annotations


class StoreError(ValueError):
    """The store cannot do what was asked: a bad file, a closed store, data that is not JSON.

    The message says what was wrong, where (the path or the study id), and what to do instead.
    """


class UnknownStudyError(StoreError):
    """A study id that this store never returned from `open_study`."""

    def __init__(self, study_id: str) -> None:
        super().__init__(
            f"unknown study id {study_id!r}: use the id returned by open_study() on this same store"
        )
        self.study_id = study_id
