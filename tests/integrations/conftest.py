"""Fixtures shared by the integration tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch


@pytest.fixture
def isolated_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A test's own trial store and compile cache, and the process's thread count put back afterwards
    (applying a config sets it, as the user asked)."""
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    monkeypatch.setenv("AUTOSCOUT_STORE", str(tmp_path / "store.sqlite"))
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)
