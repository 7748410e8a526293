"""The machines' meeting point of a multi-node launch (`_nodes.Nodes`), two of them in one process: the
trial protocol, how parts are combined, and a hand-over that does not complete."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from autoscout_plugin.integrations._nodes import NodeError, Nodes, TrialAborted

from autoscout_plugin.profiling import TrialOutcome, free_port


def meet(**kwargs: Any) -> tuple[Nodes, Nodes]:
    """Machine ranks 0 and 1 of one job, joined (each constructor waits for the other)."""
    port = free_port()
    made: dict[int, Nodes] = {}

    def join(rank: int) -> None:
        made[rank] = Nodes("127.0.0.1", port, 2, rank, job="job", join_timeout_s=20, **kwargs)

    threads = [threading.Thread(target=join, args=(r,)) for r in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert set(made) == {0, 1}
    return made[0], made[1]


def test_a_failed_part_stops_the_other_and_the_trial_is_recorded_once_naming_its_machine() -> None:
    main, other = meet()
    result: dict[str, Any] = {}

    def follower_part(payload: dict[str, Any], watch: Callable[[], None]) -> TrialOutcome:
        if payload["config"]["micro_batch_size"] == 2:
            return TrialOutcome(status="oom", error="CUDA out of memory")
        return TrialOutcome(value=90.0, peak_mem_mb=300.0)

    follower = threading.Thread(target=lambda: result.update(end=other.follow(follower_part)))
    follower.start()

    def main_part(watch: Callable[[], None]) -> TrialOutcome:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:  # a trial that would run on: stopped by machine 1's failure
            watch()
            time.sleep(0.05)
        return TrialOutcome(value=1.0)

    started = time.monotonic()
    failed = main.lead_trial(0, {"config": {"micro_batch_size": 2}}, main_part)
    assert time.monotonic() - started < 10
    assert failed.status == "oom" and failed.where == "machine rank 1"
    assert failed.error.startswith("machine rank 1 (") and "CUDA out of memory" in failed.error
    ok = main.lead_trial(1, {"config": {"micro_batch_size": 8}}, lambda watch: TrialOutcome(value=120.0,
                                                                                             peak_mem_mb=200.0))
    assert ok.status == "ok" and ok.value == 90.0 and ok.peak_mem_mb == 300.0  # the slowest machine, the most memory
    assert ok.metrics["node0_samples_per_s"] == 120.0 and ok.where == "2 nodes"
    main.finish({"config": {"micro_batch_size": 8}, "global_batch": 16})
    follower.join(30)
    assert result["end"] == {"config": {"micro_batch_size": 8}, "global_batch": 16}
    other.close()


def test_a_machine_that_never_takes_the_decision_is_an_error_not_a_real_run_without_it() -> None:
    main, other = meet()
    with pytest.raises(NodeError, match=r"machine rank 1 \(.*\) did not take the decision within 1 s"):
        main.finish({"config": None}, wait_s=1.0)
    other.close()


def test_the_abort_reaches_a_part_through_its_watch() -> None:
    main, other = meet()
    main._post("abort/0", "machine rank 0: boom")
    with pytest.raises(TrialAborted, match="boom"):
        other._watch(0)()
    main.close()
    other.close()
