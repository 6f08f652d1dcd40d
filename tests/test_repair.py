"""Verified repair: overrides applied to a run's saved config, trial ranking, and (slow) a faulty run repaired
end to end with a command that main.py's flags parse."""

import dataclasses
import json
import math
import shlex

import pytest
from absl import flags
from ml_collections import config_flags

from configs import test as test_config
from tests.fault_zoo import zoo_config
from visioncore_jax.diagnostics import Finding
from visioncore_jax.errors import InputError
from visioncore_jax.tools import repair, verification
from visioncore_jax.tools.overrides import apply_overrides, load_run_config, parse_overrides
from visioncore_jax.train import train_and_evaluate


def test_parse_overrides_reads_literals_and_strings_and_several_flags():
    parsed = parse_overrides("--config.optimizer.learning_rate=3e-3 --config.schedule.name=warmup_cosine "
                             "'--config.optimizer.lr_multipliers=((\"head/.*\", 10.0),)'")
    assert parsed == {"optimizer.learning_rate": 3e-3, "schedule.name": "warmup_cosine",
                      "optimizer.lr_multipliers": (("head/.*", 10.0),)}
    with pytest.raises(ValueError, match="is not a config override"):
        parse_overrides("lower the learning rate")


def test_apply_overrides_copies_and_names_bad_fields_in_one_line():
    config = test_config.get_config()
    changed = apply_overrides(config, {"optimizer.learning_rate": 0.5, "schedule.name": "onecycle"})
    assert (changed.optimizer.learning_rate, changed.schedule.name) == (0.5, "onecycle")
    assert config.optimizer.learning_rate == 3e-3  # the original is untouched
    with pytest.raises(ValueError, match=r"^--config.optimizer.lrate: the run's config has no field"):
        apply_overrides(config, {"optimizer.lrate": 0.5})
    with pytest.raises(ValueError, match="wrong type"):
        apply_overrides(config, {"training.num_train_steps": 1.5})


def test_a_repair_takes_only_its_own_fields_from_the_command_line(tmp_path):
    (tmp_path / "config.json").write_text(test_config.get_config().to_json_best_effort())
    given = load_run_config(str(tmp_path))  # what --config=configs/workdir.py:W gives main.py
    assert repair.repair_settings(given, str(tmp_path)) == {}
    given.diagnostics.update(repair_steps=200, repair_eval_split="test[:1024]")
    assert repair.repair_settings(given, str(tmp_path)) == {"diagnostics.repair_eval_split": "test[:1024]",
                                                            "diagnostics.repair_steps": 200}
    given.optimizer.learning_rate = 0.5  # the trials would not reproduce the run
    with pytest.raises(InputError, match=r"but --config differs in optimizer.learning_rate: leave --config out"):
        repair.repair_settings(given, str(tmp_path))
    with pytest.raises(InputError, match="holds no run"):
        repair.repair_settings(given, str(tmp_path / "none"))


def test_load_run_config_restores_tuples(tmp_path):
    config = test_config.get_config()
    config.model.num_blocks = (1, 2, 1)
    config.optimizer.lr_multipliers = (("head/.*", 2.0),)
    (tmp_path / "config.json").write_text(config.to_json_best_effort(indent=2, sort_keys=True))
    loaded = load_run_config(str(tmp_path))
    assert loaded.model.num_blocks == (1, 2, 1) and loaded.optimizer.lr_multipliers == (("head/.*", 2.0),)
    with pytest.raises(ValueError, match="holds no run"):
        load_run_config(str(tmp_path / "missing"))


def _finding(finding_id, *recommendations, severity="warning"):
    return Finding(finding_id, severity, "", "", {}, recommendations)


def test_candidates_alone_and_combined_for_independent_findings():
    findings = [
        _finding("clipping_dominates", "--config.optimizer.grad_clip_norm=1.0", "--config.optimizer.grad_clip_norm=0",
                 "--config.optimizer.grad_clip_norm=5.0", severity="error"),
        _finding("over_regularization", "--config.model.dropout=0.1 --config.training.label_smoothing=0.0",
                 "Check the data pipeline."),
        _finding("overfitting", "--config.model.dropout=0.3"),  # shares a field: not combined
        _finding("dead_units", "--config.model.width=64", severity="info"),  # info: not a candidate
    ]
    plan = {name: overrides for name, overrides, _ in repair.candidates(findings, test_config.get_config())}
    assert list(plan) == ["clipping_dominates-1", "clipping_dominates-2", "over_regularization-1",
                          "overfitting-1", "combined"]
    assert plan["combined"] == {"optimizer.grad_clip_norm": 1.0, "model.dropout": 0.1,
                                "training.label_smoothing": 0.0}


def test_rank_trials_verifies_only_clean_trials_that_beat_the_baseline():
    baseline = repair.Trial("baseline", {}, (), ("lr_too_high",), loss=2.0, metric=0.30, eval_examples=256)
    trials = [baseline,
              repair.Trial("a", {"x": 1}, ("lr_too_high",), (), loss=0.9, metric=0.70, eval_examples=256),
              repair.Trial("b", {"x": 2}, ("lr_too_high",), (), loss=0.8, metric=0.302, eval_examples=256),
              repair.Trial("c", {"x": 3}, ("lr_too_high",), ("overfitting",), loss=0.1, metric=0.95,
                           eval_examples=256),
              repair.Trial("d", {"x": 4}, ("lr_too_high",), error="ValueError: bad")]
    ranked = repair.rank_trials(trials)
    assert [t.name for t in ranked] == ["a", "b", "c", "baseline", "d"]
    assert [t.verified for t in ranked] == [True, False, False, False, False]


def _ranked(base: float, metric: float, examples: int) -> tuple[repair.Trial, repair.Trial]:
    """(the candidate, the baseline) ranked: a clean candidate scoring `metric` against a faulty baseline scoring
    `base`, both on `examples` eval examples."""
    baseline = repair.Trial("baseline", {}, (), ("overfitting",), 2.3, base, eval_examples=examples)
    trial = repair.Trial("overfitting-1", {"data.train_split": "train"}, ("overfitting",), (), 2.2, metric,
                         eval_examples=examples)
    return repair.rank_trials([baseline, trial])[0], baseline


def test_a_gain_within_the_eval_noise_is_not_verified():
    # Zoo run overfitting/1 (vc_resnet near chance): 0.199 vs 0.164 on 256 eval images, a gain of 0.035 against
    # a standard error of the difference of 0.034: noise, not a fix (the old rule, gain >= 0.005, verified it).
    trial, baseline = _ranked(0.164, 0.199, 256)
    assert not trial.verified and repair.within_noise(trial, baseline)
    assert verification.NOISE_Z == 2.241  # one-sided 2.5% over two looks (Bonferroni)
    assert trial.margin == pytest.approx(2.241 * math.sqrt((0.164 * 0.836 + 0.199 * 0.801) / 256))
    result = repair.RepairResult("/w", "eval_accuracy", 240, ("overfitting",), (trial, baseline), None)
    text = repair.format_repair(result)
    assert "| +0.0350 | ±0.076 | no: within noise |" in text
    assert "overfitting-1 left no warning or error, but its +0.035 over the baseline is within the eval's noise" \
        in text and "Rerun" not in text


def test_a_clear_gain_is_verified():
    trial, _ = _ranked(0.164, 0.40, 256)
    assert trial.verified and trial.margin < 0.40 - 0.164


def test_without_a_paired_margin_the_unpaired_one_shrinks_with_a_larger_eval_set():
    margins = [verification.noise_margin(0.164, 0.199, n, n) for n in (256, 1024, 10_000, 10 ** 7)]
    assert margins == sorted(margins, reverse=True) and margins[0] == pytest.approx(2 * margins[1])
    assert margins[-1] == verification.MIN_GAIN  # however large the eval set, the gain must still matter
    assert not _ranked(0.164, 0.199, 256)[0].verified and _ranked(0.164, 0.199, 10_000)[0].verified
    assert math.isinf(verification.noise_margin(0.164, 0.199, 0, 256))  # unknown eval size: nothing verifies


def test_a_paired_margin_measured_with_the_trial_is_the_one_used():
    baseline = repair.Trial("baseline", {}, (), ("overfitting",), 2.3, 0.164, eval_examples=256)
    trial = repair.Trial("overfitting-1", {"data.train_split": "train"}, ("overfitting",), (), 2.2, 0.199,
                         eval_examples=256, margin=0.02)  # the two agree on most examples
    ranked = repair.rank_trials([baseline, trial])[0]
    assert ranked.verified and ranked.margin == 0.02  # unpaired, +0.035 would need 0.065


def test_trials_load_from_an_older_repair_json():
    saved = {"name": "a", "overrides": {"x": 1}, "addresses": ["lr_too_high"], "findings_left": [], "loss": 1.0,
             "metric": 0.5, "verified": True, "error": None}  # written before eval_examples and margin
    trial = repair.Trial.from_json(saved)
    assert trial.addresses == ("lr_too_high",) and trial.eval_examples == 0 and math.isnan(trial.margin)


def test_a_second_look_reruns_the_baseline_and_the_trials_within_the_noise_longer():
    # Zoo run lr_decayed_too_early/0 (plateau cuts with patience 0): the fix gained +0.007 in 55 steps, within its
    # paired margin of 0.013 on 2,000 images.
    ids = ("lr_decayed_too_early",)
    base = repair.Trial("baseline", {}, (), ids, 2.16, 0.2195, eval_examples=2000, steps=55)
    noisy = repair.Trial("lr_decayed_too_early-1", {"plateau.patience": 3}, ids, (), 2.14, 0.2265,
                         eval_examples=2000, margin=0.013, steps=55)
    worse = repair.Trial("lr_decayed_too_early-2", {"plateau.metric": "eval_loss"}, ids, ids, 2.19, 0.1965,
                         eval_examples=2000, margin=0.017, steps=55)
    assert repair.second_look([base, noisy, worse]) == [("baseline", {}, ()),
                                                        ("lr_decayed_too_early-1", {"plateau.patience": 3}, ids)]
    assert repair.second_look([base, dataclasses.replace(noisy, margin=0.005), worse]) == []  # verified: done
    assert repair.second_look([base, worse]) == []  # nothing clean within the noise: nothing to look at again
    # Zoo run lr_decayed_too_early/1 (digits, 359 images): the clean fix was 0.006 behind the baseline after the
    # run's 50 steps, within its margin of 0.039: as inconclusive as a gain of 0.006.
    behind = dataclasses.replace(noisy, metric=0.2195 - 0.006, margin=0.039)
    assert repair.second_look([base, behind]) == [("baseline", {}, ()), ("lr_decayed_too_early-1",
                                                                          {"plateau.patience": 3}, ids)]
    assert repair.second_look([base, dataclasses.replace(behind, metric=0.17)]) == []  # clearly behind
    # The second look's trials are compared with its own baseline, not the first look's.
    long_base = dataclasses.replace(base, name="baseline@110", steps=110, metric=0.25)
    long = dataclasses.replace(noisy, name="lr_decayed_too_early-1@110", steps=110, metric=0.29, margin=0.014)
    result = repair.ranked_result("/w", "eval_accuracy", 55, ids, [base, noisy, worse, long_base, long])
    assert [t.name for t in result.trials if t.verified] == ["lr_decayed_too_early-1@110"]
    assert result.baseline.name == "baseline" and result.baseline_for(result.best).name == "baseline@110"
    assert "| lr_decayed_too_early-1@110 | --config.plateau.patience=3 | none | 2.14 | 0.2900 | +0.0400 |" \
        in repair.format_repair(result)
    result = repair.ranked_result("/w", "eval_accuracy", 55, ids,
                                  [base, noisy, worse, long_base, dataclasses.replace(long, metric=0.255)])
    assert result.best is None  # +0.035 over the first baseline, but +0.005 over its own: within the noise


def test_lr_search_bisects_towards_the_lr_that_learned_more_until_a_trial_verifies():
    lr, ids = "optimizer.learning_rate", ("lr_too_high",)

    def trial(name, value, left=(), metric=0.5, **kwargs):
        return repair.Trial(name, {lr: value} if value else {}, ids if value else (), left, metric=metric, **kwargs)

    # Zoo run lr_too_high/1 (Adam at 0.5, baseline 0.66): the analyzer's LR left a collapse, the range test's 0.12
    # learned most but left dead units: none clean, so the geometric mean of the two.
    trials = [trial("baseline", None, ("lr_too_high",), 0.66),
              trial("lr_too_high-1", 0.000881, ("one_class_collapse",), 0.16),
              trial("lr_too_high-lr_find", 0.12, ("dead_units",), 0.91),
              repair.Trial("c", {lr: 1e-6, "optimizer.grad_clip_norm": 1.0}, ids, ()),  # not the LR alone
              repair.Trial("d", {lr: 10.0}, ids, error="FloatingPointError")]  # did not run
    assert repair.next_lr(trials) == ("lr_too_high-lr_search-1", {lr: 0.01}, ids)
    # 0.01 is clean but learned less than the baseline: halfway (in log) towards 0.12, which learned more.
    trials.append(trial("lr_too_high-lr_search-1", 0.01, (), 0.54))
    assert repair.next_lr(trials) == ("lr_too_high-lr_search-2", {lr: 0.035}, ids)
    trials.append(trial("lr_too_high-lr_search-2", 0.035, ("dead_units",), 0.60))
    assert repair.next_lr(trials)[1] == {lr: 0.019}  # the edge lies between 0.01 and 0.035 now
    trials.append(trial("lr_too_high-lr_search-3", 0.019, (), 0.58))
    assert repair.next_lr(trials) is None  # 0.019 to 0.035: within LR_SEARCH_RESOLUTION
    assert repair.next_lr([*trials[:3], trial("e", 0.01, (), 0.9, verified=True)]) is None
    assert repair.next_lr(trials[:2]) is None  # one LR: nothing to search between


def test_trial_on_another_split_is_evaluated_in_its_own_epochs(monkeypatch, tmp_path):
    class Info:  # the whole split: 4,096 examples, 128 steps of 32 an epoch
        num_train_examples = 4096

    seen = {}

    def train(config, workdir):
        seen["config"] = config
        raise RuntimeError("stop here")

    monkeypatch.setattr(repair, "build_input", lambda config: type("Pipeline", (), {"info": Info})())
    monkeypatch.setattr(repair, "train_and_evaluate", train)
    config = test_config.get_config()
    config.training.batch_size = 32
    base = repair.trial_config(config, 240, steps_per_epoch=4)  # the run's 128-image slice: 4 steps an epoch
    assert base.training.eval_every_epochs == 15.0  # every 60 steps
    trial = repair.run_trial(base, str(tmp_path / "t"), "overfitting-1", {"data.train_split": "train"}, ())
    assert trial.error == "RuntimeError: stop here"
    assert seen["config"].training.eval_every_epochs * 128 == 60  # still every 60 steps, not every 1,920
    assert seen["config"].data.train_split == "train" and seen["config"].training.num_train_steps == 240


def _eval_split(train_split: str, eval_split: str, chosen: str = "") -> tuple[str, str]:
    """(the split the trials are scored on, the split a trial evaluates on while it trains) for a run with these
    splits."""
    config = test_config.get_config()
    config.data.update(train_split=train_split, eval_split=eval_split)
    config.diagnostics.repair_eval_split = chosen
    return repair.trial_eval_split(config).name, repair.trial_config(config, 40, steps_per_epoch=4).data.eval_split


def test_trials_are_scored_on_the_whole_split_of_a_sliced_eval_split():
    # The zoo's runs on test[:256]: a margin of 0.05-0.07 near chance; the whole test split (2,000 images of
    # embedded_shapes) has 2.8x less noise. Every trial, the baseline included, is scored on the same split, and
    # trains and evaluates as the run did (its findings come from the run's own eval split).
    assert _eval_split("train[:4096]", "test[:256]") == ("test", "test[:256]")
    assert _eval_split("train", "test") == ("test", "test")  # a whole split (digits' 359 images): left as it is
    # The run trains on a slice of the split its eval slice is cut from: the rest of it may be training data.
    assert _eval_split("test[256:]", "test[:256]") == ("test[:256]", "test[:256]")
    assert _eval_split("train[:4096]", "test[:256]", chosen="test[:1024]")[0] == "test[:1024]"
    config = test_config.get_config()
    config.data.eval_split = "test[:256]"
    assert repair.trial_eval_split(config) == repair.EvalSplit("test", "the whole split of the run's test[:256]")
    assert "none larger" in repair.trial_eval_split(test_config.get_config()).reason  # the header says so


def test_the_table_names_the_trials_eval_split():
    trial, baseline = _ranked(0.164, 0.40, 2000)
    result = repair.RepairResult("/w", "eval_accuracy", 240, ("overfitting",), (trial, baseline), None,
                                 repair.EvalSplit("test", "the whole split of the run's test[:256]"))
    assert "on 2000 eval examples of test (the whole split of the run's test[:256]);" in repair.format_repair(result)
    assert result.to_json()["eval_split"] == {"name": "test", "reason": "the whole split of the run's test[:256]"}


def test_a_trial_of_a_run_with_reduce_on_plateau_evaluates_when_the_run_did():
    # Zoo run lr_decayed_too_early/0: plateau on the training loss with patience 0, an evaluation every 5 steps.
    # With 4 evaluations over its 55 steps the trial cut the LR 4 times instead of 11: its baseline learned as well
    # as the fixes and nothing could be verified.
    config = test_config.get_config()
    config.training.update(eval_every_epochs=5 / 128, log_every_steps=5)
    config.plateau.update(enabled=True, metric="train_loss", patience=0)
    trial = repair.trial_config(config, 55, steps_per_epoch=128)
    assert (trial.training.eval_every_epochs, trial.training.log_every_steps) == (5 / 128, 5)
    config.plateau.enabled = False
    trial = repair.trial_config(config, 55, steps_per_epoch=128)
    assert trial.training.eval_every_epochs * 128 == 13 and trial.training.log_every_steps == 5


def test_budget_default_covers_a_quarter_of_the_run_and_the_main_findings_evidence():
    config = test_config.get_config()
    assert [repair.repair_budget(config, n) for n in (20, 100, 400)] == [20, 40, 100]
    # As far as the main finding was seen: a schedule that ran out from step 60 to 100 of 132.
    assert repair.repair_budget(config, 132, seen_until=100) == 100
    assert repair.repair_budget(config, 132, seen_until=10) == 40
    assert repair.repair_budget(config, 132, seen_until=200) == 132
    config.diagnostics.repair_steps = 7
    assert repair.repair_budget(config, 400, seen_until=300) == 7


@pytest.mark.slow
def test_repair_of_a_run_with_lr_times_100_finds_a_verified_fix(tfds_data_dir, tmp_path):
    workdir = str(tmp_path / "run")
    # 60 steps; the default budget runs the trials as far as the main finding (lr_too_high) was seen: all 60.
    config = zoo_config(tfds_data_dir)
    config.optimizer.learning_rate = 1.0  # typed x100
    train_and_evaluate(config, workdir)
    result = repair.repair(workdir)

    saved = json.loads((tmp_path / "run" / "diagnostics" / "repair.json").read_text())
    assert saved["baseline"] == "baseline" and saved["budget"] == 60 and saved["metric"] == "eval_accuracy"
    baseline = next(t for t in saved["trials"] if t["name"] == "baseline")
    assert baseline["findings_left"], "the fault must show in the baseline trial"
    best = saved["trials"][0]
    assert saved["best"] == best["name"] and best["verified"] and not best["findings_left"]
    # The run evaluates on test[:256]; the trials are scored on the whole test split (2,000 images), a 2.8x
    # smaller margin, paired over the same images: the margin is the paired one of the saved per-image scores.
    assert saved["eval_split"]["name"] == "test" and best["eval_examples"] == 2000
    assert best["metric"] - baseline["metric"] >= best["margin"] > verification.MIN_GAIN
    trials_dir = tmp_path / "run" / "diagnostics" / "repair"
    scores = verification.ExampleScores.load(str(trials_dir / best["name"]))
    baseline_scores = verification.ExampleScores.load(str(trials_dir / "baseline"))
    assert scores.num_examples == 2000 and scores.metric() == pytest.approx(best["metric"])
    assert baseline_scores.metric() == pytest.approx(baseline["metric"])
    assert best["margin"] == pytest.approx(verification.paired_margin(baseline_scores, scores))
    assert best["overrides"]["optimizer.learning_rate"] < 1.0
    records = trials_dir / best["name"] / "diagnostics" / "eval.jsonl"
    assert len(records.read_text().splitlines()) >= 3
    assert "## Verified repair" in (tmp_path / "run" / "diagnostics" / "report.md").read_text()

    argv = shlex.split(result.command)
    assert argv[:2] == ["python", "main.py"]
    argv = ["main.py", *argv[2:]]
    values = flags.FlagValues()  # main.py's two flags, parsed as main.py parses them
    flags.DEFINE_string("workdir", None, "", flag_values=values)
    config_flags.DEFINE_config_file("config", None, "", flag_values=values, sys_argv=argv)
    values(argv)
    assert values.workdir == workdir + "_repaired"
    assert math.isclose(values.config.optimizer.learning_rate, best["overrides"]["optimizer.learning_rate"])
    assert values.config.training.num_train_steps == 60  # the full run, not the trial's budget


def test_write_repair_appends_one_section_and_json(tmp_path):
    (tmp_path / "diagnostics").mkdir()
    (tmp_path / "diagnostics" / "report.md").write_text("# Report\n\nfindings\n")
    trials = (repair.Trial("lr_too_high-1", {"optimizer.learning_rate": 0.1}, ("lr_too_high",), (), 0.5, 0.8, True),
              repair.Trial("baseline", {}, (), ("lr_too_high",), 2.0, 0.3))
    result = repair.RepairResult(str(tmp_path), "eval_accuracy", 40, ("lr_too_high",), trials,
                                 repair.rerun_command(str(tmp_path), trials[0].overrides))
    repair.write_repair(result)
    repair.write_repair(result)  # a second repair replaces the section
    report = (tmp_path / "diagnostics" / "report.md").read_text()
    assert report.startswith("# Report\n\nfindings\n") and report.count("## Verified repair") == 1
    row = "| 1 | lr_too_high-1 | --config.optimizer.learning_rate=0.1 | none | 0.5 | 0.8000 | +0.5000 | - | yes |"
    assert row in report
    saved = json.loads((tmp_path / "diagnostics" / "repair.json").read_text())
    assert saved["best"] == "lr_too_high-1" and saved["command"].endswith("--config.optimizer.learning_rate=0.1")
    assert [t["name"] for t in saved["trials"]] == ["lr_too_high-1", "baseline"]


def test_write_repair_replaces_its_section_in_a_report_that_holds_only_it(tmp_path):
    # A run with diagnostics.report=False has no report.md before its first repair (the zoo's runs): the second
    # repair appended its section after the first.
    trials = (repair.Trial("baseline", {}, (), ("lr_too_high",), 2.0, 0.3),)
    result = repair.RepairResult(str(tmp_path), "eval_accuracy", 40, ("lr_too_high",), trials, None)
    repair.write_repair(result)
    repair.write_repair(result)
    report = (tmp_path / "diagnostics" / "report.md").read_text()
    assert report.startswith("## Verified repair\n") and report.count("## Verified repair") == 1


def test_auto_repair_is_off_by_default(tmp_path):
    config = test_config.get_config()
    assert repair.auto_repair(config, str(tmp_path / "never_read")) is None
