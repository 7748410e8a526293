"""The replay benchmark on tables it has never seen: space derivation, answers, metrics, CLI, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import replay
from benchmarks.synthetic import make_table

COMMITTED = sorted((Path(__file__).parents[2] / "benchmarks" / "tables").glob("*.csv"))


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    return make_table(tmp_path_factory.mktemp("tables") / "unseen.csv", seed=11)


def test_space_is_derived_from_the_table(synth):
    table = replay.load_table(synth)
    assert table.space.names[:2] == ["strategy", "num_processes"]
    assert table.space["micro_batch_size"].choices == (4, 8, 16)
    assert table.space["activation_checkpointing"].kind == "bool"
    # Every row of the table is a feasible config of the derived space, and nothing else is.
    assert len(table.space.enumerate()) == len(table.rows)


def test_conditional_knob_from_empty_cells(tmp_path):
    csv = tmp_path / "cond.csv"
    csv.write_text("strategy,ddp_bucket_cap_mb,samples_per_s,trial_wall_s,status\n"
                   "single,,10,1,ok\nddp,25,12,2,ok\nddp,100,11,2,ok\n", encoding="utf-8")
    table = replay.load_table(csv)
    knob = table.space["ddp_bucket_cap_mb"]
    assert [str(c) for c in knob.when] == ["strategy in ['ddp']"]
    assert len(table.space.enumerate()) == 3


def test_unknown_knob_is_categorical_and_missing_rows_answer_invalid(tmp_path):
    csv = tmp_path / "odd.csv"
    csv.write_text("attention_kernel,micro_batch_size,samples_per_s,trial_wall_s,status\n"
                   "flash,4,10,1,ok\nmath,4,7,1,ok\nflash,8,12,1,oom\n", encoding="utf-8")
    table = replay.load_table(csv)
    assert table.space["attention_kernel"].kind == "categorical"
    assert table.answer({"attention_kernel": "math", "micro_batch_size": 8}).status == "invalid"
    assert table.answer({"attention_kernel": "flash", "micro_batch_size": 8}).status == "oom"
    assert table.oracle == 10


def test_replay_runs_every_optimizer_and_reports_the_json_fields(synth, tmp_path):
    out = tmp_path / "r.json"
    names = "autoscout,autoscout_no_f0,random,grid,skopt_gp,optuna_tpe,ds_model_based"
    assert replay.main(["--table", str(synth), "--seeds", "2", "--budget", "6", "--json", str(out),
                        "--optimizers", names]) == 0
    data = json.loads(out.read_text())
    assert set(data) == set(names.split(","))
    for result in data.values():
        assert set(result["median_ratio_at"]) == {"5", "10", "20"}
        assert 1 <= result["median_trials_to_95"] <= 6
        assert result["median_seconds_to_95"] >= 0
        assert all(0 <= r <= 1 for r in result["median_ratio_at"].values())


def test_metrics_count_the_whole_budget_when_95_percent_is_never_reached():
    run = replay.Run(values=[1.0, None, 2.0], costs=[10.0, 0.0, 20.0])
    m = replay._metrics(run, oracle=10.0, budget=6)
    assert m["trials"] == 6 and m["seconds"] == pytest.approx(60.0)
    hit = replay._metrics(replay.Run([5.0, 9.6], [3.0, 4.0]), oracle=10.0, budget=6)
    assert hit["trials"] == 2 and hit["seconds"] == 7.0 and hit["ratio"]["5"] == pytest.approx(0.96)


@pytest.mark.parametrize("text, match", [
    ("", "empty table"),
    ("strategy,trial_wall_s\nsingle,1\n", "missing result column"),
    ("strategy,samples_per_s,status\n", "no rows"),
    ("activation_checkpointing,samples_per_s,status\nmaybe,1,ok\n", "not a boolean"),
])
def test_bad_tables_give_clear_errors(tmp_path, text, match):
    csv = tmp_path / "bad.csv"
    csv.write_text(text, encoding="utf-8")
    with pytest.raises(ValueError, match=match):
        replay.load_table(csv)


def test_missing_table_and_bad_arguments(tmp_path, synth, capsys):
    with pytest.raises(FileNotFoundError, match="no table"):
        replay.load_table(tmp_path / "nope.csv")
    with pytest.raises(SystemExit):
        replay.main(["--table", str(synth), "--optimizers", "magic"])
    assert "unknown optimizer" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        replay.main(["--table", str(synth), "--seeds", "0"])


@pytest.mark.parametrize("path", COMMITTED, ids=[p.stem for p in COMMITTED])
def test_committed_tables_load_with_enough_real_rows(path):
    table = replay.load_table(path)
    assert len(table.rows) >= 48
    strategies = {json.loads(k)["strategy"] for k in table.rows}
    assert {"single", "ddp", "fsdp"} <= strategies
    assert table.cost_model() is not None
