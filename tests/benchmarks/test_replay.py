"""The replay benchmark on tables it has never seen: space derivation, answers, metrics, CLI, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import replay
from benchmarks.synthetic import SCENARIOS, make_table

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


# ------------------------------------------------------------------------------ failure scenarios
def test_the_error_column_is_classified_like_a_live_trial(tmp_path):
    csv = tmp_path / "errors.csv"
    csv.write_text("compile,precision,samples_per_s,trial_wall_s,status,error\n"
                   "off,32-true,10,1,ok,\n"
                   "default,32-true,,15,error,torch._dynamo.exc.TorchRuntimeError: no fake impl registered\n"
                   "off,bf16-mixed,,3,error,\n", encoding="utf-8")
    table = replay.load_table(csv)
    compiled = table.answer({"compile": "default", "precision": "32-true"})
    assert (compiled.failure, compiled.blame, compiled.cost_s) == ("unsupported", ["compile"], 15.0)
    assert table.answer({"compile": "off", "precision": "bf16-mixed"}).failure == "crash"  # no text: no evidence


@pytest.mark.parametrize("scenario, failing", [("bf16_fails", "precision"), ("ddp_fails", "strategy")])
def test_a_scenario_fails_its_setting_everywhere_with_the_real_error(synth, scenario, failing):
    plain, table = replay.load_table(synth), replay.load_table(synth, scenario)
    assert table.name == f"unseen+{scenario}"
    fails = SCENARIOS[scenario].failing
    for key in table.rows:
        config = json.loads(key)
        trial = table.answer(config)
        if fails(config):
            assert trial.failure == "unsupported" and trial.blame == [failing], config
        else:  # the rest as measured (the synthetic table's own FSDP + compile crashes included)
            assert trial.status == plain.answer(config).status
    assert table.oracle == max(r["samples_per_s"] for r in table.rows.values() if r["status"] == "ok")


def test_a_failing_setting_missing_from_the_table_fails_like_its_rows(tmp_path):
    # The machine's fault does not depend on the table having measured that config.
    csv = tmp_path / "gap.csv"
    csv.write_text("precision,num_threads,samples_per_s,trial_wall_s,status\n"
                   "32-true,1,10,1,ok\n32-true,2,12,1,ok\nbf16-mixed,1,14,1,ok\n", encoding="utf-8")
    gap = {"precision": "bf16-mixed", "num_threads": 2}
    assert replay.load_table(csv).answer(gap).status == "invalid"  # no scenario: just a gap
    trial = replay.load_table(csv, "bf16_fails").answer(gap)
    assert (trial.failure, trial.blame, trial.cost_s) == ("unsupported", ["precision"], 0.0)


def test_the_oom_line_is_monotone_in_the_micro_batch_and_checkpointing_lifts_it(synth):
    plain, table = replay.load_table(synth), replay.load_table(synth, "oom_line")
    for key, row in table.rows.items():
        config = json.loads(key)  # micro-batches 4, 8, 16: the line is above 8, checkpointing halves the need
        need = config["micro_batch_size"] * (0.5 if config["activation_checkpointing"] else 1.0)
        assert row["status"] == ("oom" if need > 8 else plain.rows[key]["status"]), config
    big = next(json.loads(k) for k, r in table.rows.items() if r["status"] == "oom")
    assert table.answer(big).failure == "oom"


def test_transient_failures_are_retried_once_and_never_told(synth):
    table = replay.load_table(synth, "transient")
    run = replay.replay_one(table, "random", seed=3, budget=40)
    transient = [i for i, f in enumerate(run.failures) if f == "transient"]
    assert transient, "10% of 40 trials: some must have failed transiently"
    for i in transient:  # the next trial is the same config, once more
        assert run.configs[i + 1] == run.configs[i] and run.failures[i + 1] != "transient"
    assert len(run.values) == 40


def test_autoscout_spends_at_most_one_trial_on_a_setting_that_fails_everywhere(synth):
    table = replay.load_table(synth, "ddp_fails")
    fails = SCENARIOS["ddp_fails"].failing
    for seed in range(2):
        run = replay.replay_one(table, "autoscout", seed=seed, budget=8)
        assert sum(fails(c) for c in run.configs) <= 1


def test_the_cli_reports_trials_spent_on_the_failing_setting(synth, tmp_path, capsys):
    out = tmp_path / "r.json"
    assert replay.main(["--table", str(synth), "--scenario", "bf16_fails", "--seeds", "2", "--budget", "5",
                        "--optimizers", "random", "--json", str(out)]) == 0
    data = json.loads(out.read_text())["random"]
    assert set(data["failing_trials"]) == {"median", "max"} and data["table"] == "unseen+bf16_fails"
    assert "on the failing setting" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        replay.main(["--table", str(synth), "--scenario", "cosmic_rays"])


@pytest.mark.parametrize("scenario", ["ddp_fails", "oom_line"])
def test_autoscout_reaches_95_percent_within_five_trials_on_bert_encoder(scenario):
    # Before the additive member (an effect measured in one arm carries to another) and the memory
    # boundary that rules out what needs more memory than an OOM, both took 6 trials.
    table = replay.load_table(Path(__file__).parents[2] / "benchmarks" / "tables" / "bert_encoder.csv", scenario)
    run = replay.replay_one(table, "autoscout", seed=0, budget=6)
    metrics = replay._metrics(run, table.oracle, budget=6)
    assert metrics["reached"] and metrics["trials"] <= 5, (metrics, run.configs)


def test_autoscout_with_f0_at_half_trust_finds_the_recurrent_winner_without_a_bf16_trial():
    # recurrent_lm without DDP: the one config within 5% is compile with checkpointing. The F0 of an
    # architecture it does not describe sits at half trust; its bf16 warning (14x slower here) used to be
    # pooled with F1's ignorance into a wide spread, and a bf16 trial came fifth; the winner came 11th.
    table = replay.load_table(Path(__file__).parents[2] / "benchmarks" / "tables" / "recurrent_lm.csv", "ddp_fails")
    run = replay.replay_one(table, "autoscout", seed=0, budget=8)
    metrics = replay._metrics(run, table.oracle, budget=8)
    assert metrics["reached"] and metrics["trials"] <= 7, (metrics, run.configs)
    assert not any(c["precision"] == "bf16-mixed" for c in run.configs[:metrics["trials"]]), run.configs
