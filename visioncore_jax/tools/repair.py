"""Verified repair (`python main.py --mode=repair --workdir=W`): short trials of the run's own config from its
initial state (same seed), the baseline and each top finding's candidate overrides (alone, and combined for
independent findings); each trial is analysed by the same rules. A fix is *verified* when its trial has no
warning or error left and beats the baseline trial on the run's metric by more than the comparison's noise
(`verification.paired_margin`, over the same eval examples). Each trial trains and evaluates as the run did; its
metric is then measured on the whole split when the run evaluates on a slice of it (`trial_eval_split`): the margin
falls as 1 / sqrt(eval examples). When no fix verified but clean trials were within the noise, a second look runs
them and the baseline again, longer (`second_look`).

Outputs: a ranked table (printed), `W/diagnostics/repair.json`, a section of `W/diagnostics/report.md`, and the
command that reruns the run with the best verified fix.
"""

import dataclasses
import json
import logging
import math
import os
import re
import shlex
import shutil

import ml_collections

from visioncore_jax import diagnostics
from visioncore_jax.data import build_input
from visioncore_jax.errors import InputError
from visioncore_jax.optim import durations
from visioncore_jax.splits import sliced_from, split_name
from visioncore_jax.tools.lr_find import lr_range_test
from visioncore_jax.tools.overrides import apply_overrides, flattened, load_run_config, override_flags, parse_overrides
from visioncore_jax.tools.verification import MIN_GAIN, NOISE_Z, ExampleScores, noise_margin, paired_margin
from visioncore_jax.train import partitioning, train_and_evaluate
from visioncore_jax.train.experiment import build_experiment
from visioncore_jax.train.predictions import eval_predictions

# Default budget (config.diagnostics.repair_steps = -1): a quarter of the run, at least MIN_BUDGET steps, never
# more than the run itself.
BUDGET_FRACTION, MIN_BUDGET = 0.25, 40
# Records (evaluations) each trial writes: enough for the rules' trend tests.
TRIAL_RECORDS = 4
# Candidates: the MAX_FINDINGS most severe warning/error findings, the first MAX_PER_FINDING overrides of each.
MAX_FINDINGS, MAX_PER_FINDING = 3, 2
# Findings about the LR also get the LR range test's suggestion as a candidate (their own advice may be a
# fixed factor that is not enough).
LR_FINDINGS = ("nonfinite", "lr_too_high", "lr_too_low", "loss_plateau")
# When no trial verified, a search over the LR, one trial a round (at most LR_SEARCH_ROUNDS), on the trials that
# changed the LR alone: the LRs proposed (the finding's own from the update ratio, the range test's from the loss)
# are estimates from different evidence, and the LR that both stays clean and learns enough may lie between
# them. With a clean LR tried, the next LR is the geometric mean of the best clean one and its neighbour in LR
# that learned more but left a finding (bisection towards the edge of the clean range, where a short run learns
# fastest); with none clean, the geometric mean of the lowest and highest. It stops when the two are within
# LR_SEARCH_RESOLUTION x of each other.
LR_SEARCH_ROUNDS, LR_SEARCH_RESOLUTION = 4, 2.0
SECTION = "## Verified repair"
# Overrides that change the length of an epoch (the training data or the batch): a trial with one of them gets its
# TRIAL_RECORDS evaluations re-timed in its own epochs (else a trial on the whole split of a run that trained on
# a 128-image slice would evaluate once, at the end, and the rules would see no trend).
EPOCH_FIELDS = frozenset({"data.name", "data.image_folder", "data.train_split", "training.batch_size"})
# The fields a repair takes from its command line (`--mode=repair --config=configs/workdir.py:W
# --config.diagnostics.repair_steps=N`): how to repair, not what: every other field is the run's.
REPAIR_FIELDS = ("diagnostics.repair_steps", "diagnostics.repair_eval_split")
# The second look (verification.LOOKS): when no trial verified but clean ones are within their margin of the
# baseline (above or below), the baseline and the best LONGER_TRIALS of them run again LONGER times the budget. A
# fix gains more the longer it trains (zoo: more training data, an unfrozen pathway, a later LR cut: +0.007-0.017 in
# 55-240 steps, within margins of 0.013-0.021), while the noise of the comparison, set by the eval examples, stays
# the same.
LONGER, LONGER_TRIALS = 2, 2


@dataclasses.dataclass(frozen=True)
class Trial:
    """One short run: its overrides, the findings (warning/error ids) left, the loss at the end, the metric on
    `eval_examples` examples of the trials' eval split, and `margin`, the gain over the baseline it needed
    (`paired_margin`; NaN until measured, and for the baseline)."""

    name: str
    overrides: dict
    addresses: tuple[str, ...]  # the finding ids whose advice the overrides are
    findings_left: tuple[str, ...] = ()
    loss: float = math.nan
    metric: float = math.nan
    verified: bool = False
    error: str | None = None
    eval_examples: int = 0
    margin: float = math.nan
    steps: int = 0  # train steps; 0 in a repair.json written before the second look (all had the budget)

    @property
    def is_baseline(self) -> bool:
        """The trial without overrides (of either look)."""
        return self.name.partition("@")[0] == "baseline"

    @classmethod
    def from_json(cls, value: dict) -> "Trial":
        """A Trial from its dict in repair.json (fields missing in older files get their defaults)."""
        fields = {f.name for f in dataclasses.fields(cls)}
        trial = cls(**{k: v for k, v in value.items() if k in fields})
        return dataclasses.replace(trial, addresses=tuple(trial.addresses),
                                   findings_left=tuple(trial.findings_left))


@dataclasses.dataclass(frozen=True)
class EvalSplit:
    """The split the trials evaluate on, and why (the table's header says both)."""

    name: str
    reason: str


@dataclasses.dataclass(frozen=True)
class RepairResult:
    """The repair of one run: the trials, best first (the baseline included), and the rerun command."""

    workdir: str
    metric: str
    budget: int
    findings: tuple[str, ...]  # the run's warning/error ids, most severe first
    trials: tuple[Trial, ...]
    command: str | None  # rerun with the best verified fix; None when no fix was verified
    eval_split: EvalSplit | None = None  # None: not recorded (a result re-ranked from an older repair.json)

    @property
    def baseline(self) -> Trial:
        """The first look's trial without overrides."""
        return next(t for t in self.trials if t.name == "baseline")

    def baseline_for(self, trial: Trial) -> Trial:
        """The baseline `trial` is compared with: the one of its look (`baseline_of`)."""
        return baseline_of(trial, self.trials)

    @property
    def best(self) -> Trial | None:
        """The best verified trial, if any."""
        return next((t for t in self.trials if t.verified), None)

    def to_json(self) -> dict:
        """A JSON-serialisable dict (also the content of repair.json)."""
        return {"workdir": self.workdir, "metric": self.metric, "budget": self.budget,
                "findings": list(self.findings), "baseline": self.baseline.name,
                "best": self.best.name if self.best else None, "command": self.command,
                "eval_split": dataclasses.asdict(self.eval_split) if self.eval_split else None,
                "trials": [dataclasses.asdict(t) for t in self.trials]}


def repair_budget(config: ml_collections.ConfigDict, run_steps: int, seen_until: int = 0) -> int:
    """Train steps of each trial: `config.diagnostics.repair_steps`, or with -1 a quarter of the run (at least
    MIN_BUDGET steps) and at least `seen_until`, the last step of the evidence of the run's main finding, at most
    the run. A trial that ends before the fault showed (an LR schedule that ran out at step 60 of 132, an eval
    loss that rose from step 16 to 240) has nothing to compare: its baseline is as healthy as any candidate."""
    steps = int(config.diagnostics.get("repair_steps", -1))
    if steps > 0:
        return steps
    return min(run_steps, max(MIN_BUDGET, math.ceil(BUDGET_FRACTION * run_steps), seen_until))


def metric_name(run) -> str:
    """The run's headline metric: eval_mean_dice for segmentation, eval_accuracy otherwise."""
    return "eval_mean_dice" if run.eval and run.eval[-1].task == "segmentation" else "eval_accuracy"


def trial_eval_split(config: ml_collections.ConfigDict) -> EvalSplit:
    """The split every trial's metric is measured on: `config.diagnostics.repair_eval_split` when set; else the
    whole split that the run's eval split is a slice of (`test` for `test[:256]`: more examples, a smaller noise
    margin), unless the run trains on that split too (its slices may overlap the training data); else the run's
    own."""
    own, chosen = config.data.eval_split, config.diagnostics.get("repair_eval_split", "")
    whole = sliced_from(own)
    if chosen:
        return EvalSplit(chosen, "diagnostics.repair_eval_split")
    if whole is None:
        return EvalSplit(own, "the run's own: a whole split, none larger to draw from")
    if whole == split_name(config.data.train_split):
        return EvalSplit(own, f"the run's own: the run trains on {config.data.train_split}, from the same split")
    return EvalSplit(whole, f"the whole split of the run's {own}")


def trial_config(config: ml_collections.ConfigDict, budget: int, steps_per_epoch: int) -> ml_collections.ConfigDict:
    """`config` shortened to `budget` steps, without early stopping, report plots or a repair of its own. It
    evaluates on the run's eval split TRIAL_RECORDS times, or, with reduce-on-plateau on, at the run's own
    evaluation and logging periods: the plateau acts at each evaluation (on an eval metric, or the last log
    window's training loss), and a trial that evaluated at other steps would cut the LR at other steps than the run
    did, and not reproduce a fault of the plateau's."""
    period = max(1, budget // TRIAL_RECORDS)
    config = ml_collections.ConfigDict(config.to_dict())
    config.training.update(num_epochs=-1, num_train_steps=budget, checkpoint_every_steps=max(budget, 1))
    if not config.plateau.enabled:
        config.training.update(eval_every_epochs=period / steps_per_epoch,
                               log_every_steps=min(int(config.training.log_every_steps), period))
    config.diagnostics.report = False
    config.early_stopping.enabled = False  # every trial is compared at the budget
    if "auto_repair" in config.diagnostics:
        config.diagnostics.auto_repair = False
    return config


def _severe(findings) -> list:
    return [f for f in findings if f.severity != "info"]


def candidates(findings, config: ml_collections.ConfigDict) -> list[tuple[str, dict, tuple[str, ...]]]:
    """(name, overrides, finding ids) of the trials to run besides the baseline: each top finding's first
    overrides alone, the LR range test's LR for LR findings, and the first overrides of all independent
    findings (no field in common) together. Recommendations that are not overrides are skipped."""
    out, seen = [], set()

    def add(name, overrides, ids):
        key = tuple(sorted((k, repr(v)) for k, v in overrides.items()))
        if overrides and key not in seen:
            seen.add(key)
            out.append((name, overrides, ids))

    firsts, lr_tested = [], False
    for finding in _severe(findings)[:MAX_FINDINGS]:
        parsed = []
        for recommendation in finding.recommendations:
            try:
                parsed.append(parse_overrides(recommendation))
            except ValueError:
                continue
        for index, overrides in enumerate(parsed[:MAX_PER_FINDING], start=1):
            add(f"{finding.id}-{index}", overrides, (finding.id,))
        if parsed:
            firsts.append((finding.id, parsed[0]))
        if finding.id in LR_FINDINGS and not lr_tested:  # one LR range test per repair
            lr_tested, suggestion = True, _lr_suggestion(config)
            if suggestion is not None:
                add(f"{finding.id}-lr_find", {"optimizer.learning_rate": suggestion}, (finding.id,))
    independent, fields = [], set()
    for finding_id, overrides in firsts:
        if not fields & set(overrides):
            independent.append((finding_id, overrides))
            fields |= set(overrides)
    if len(independent) > 1:
        add("combined", {k: v for _, o in independent for k, v in o.items()}, tuple(i for i, _ in independent))
    return out


def next_lr(trials: list[Trial]) -> tuple[str, dict, tuple[str, ...]] | None:
    """The LR search's next candidate (see LR_SEARCH_ROUNDS) from the ranked `trials` so far; None when a trial
    verified, fewer than two LRs were tried alone, or the interval to split is within LR_SEARCH_RESOLUTION x."""
    key = "optimizer.learning_rate"
    if any(t.verified for t in trials):
        return None
    tried = sorted((t for t in trials if t.error is None and set(t.overrides) == {key}), key=lambda t: t.overrides[key])
    clean = [t for t in tried if not t.findings_left and math.isfinite(t.metric)]
    if clean:
        best = max(clean, key=lambda t: t.metric)
        index = tried.index(best)
        better = [t for t in tried[max(index - 1, 0):index + 2]
                  if t.findings_left and math.isfinite(t.metric) and t.metric > best.metric]
        ends = (best, max(better, key=lambda t: t.metric)) if better else None
    else:
        ends = (tried[0], tried[-1]) if len(tried) > 1 else None
    if ends is None:
        return None
    low, high = sorted(t.overrides[key] for t in ends)
    if high / low <= LR_SEARCH_RESOLUTION:
        return None
    ids = ends[-1].addresses
    rounds = sum("-lr_search-" in t.name for t in trials)
    return f"{ids[0] if ids else 'lr'}-lr_search-{rounds + 1}", {key: float(f"{math.sqrt(low * high):.2g}")}, ids


def _lr_suggestion(config: ml_collections.ConfigDict) -> float | None:
    """The LR range test's suggestion for `config` (rounded to 2 significant digits), None when it fails."""
    try:
        result = lr_range_test(build_experiment(config))
    except Exception as error:  # the repair goes on with the findings' own advice
        logging.warning("Repair: the LR range test failed (%s: %s).", type(error).__name__, error)
        return None
    return float(f"{result.suggestion:.2g}") if math.isfinite(result.suggestion) and result.suggestion > 0 else None


def run_trial(config: ml_collections.ConfigDict, workdir: str, name: str, overrides: dict,
              addresses: tuple[str, ...], baseline: ExampleScores | None = None) -> Trial:
    """Trains `config` with `overrides` into `workdir` (from scratch), analyses it, scores it on the trials' eval
    split (`workdir/eval_scores.npz`) and, given the `baseline`'s scores, measures its margin."""
    shutil.rmtree(workdir, ignore_errors=True)
    try:
        trial = apply_overrides(config, overrides)
        if EPOCH_FIELDS & set(overrides):
            info = build_input(trial).info
            trial = trial_config(trial, config.training.num_train_steps,
                                 durations.steps_per_epoch(info.num_train_examples, trial.training.batch_size))
        state = train_and_evaluate(trial, workdir)
        if int(state.step) < config.training.num_train_steps:  # the loop stopped on SIGTERM: so does the repair
            raise KeyboardInterrupt(f"Repair stopped during trial {name}; rerun --mode=repair to start again.")
        findings = diagnostics.analyze(workdir)
        run = diagnostics.load_records(workdir)
        scores = trial_scores(trial, state)
        scores.save(workdir)
    except Exception as error:  # a candidate that crashes is a failed trial, not a failed repair
        logging.warning("Repair trial %s failed: %s: %s", name, type(error).__name__, error)
        return Trial(name, overrides, addresses, error=f"{type(error).__name__}: {str(error)[:300]}")
    loss = run.train[-1].scalars["loss"].mean if run.train and "loss" in run.train[-1].scalars else math.nan
    margin = paired_margin(baseline, scores) if baseline is not None and baseline.pairs_with(scores) else math.nan
    return Trial(name, overrides, addresses, tuple(f.id for f in _severe(findings)), _finite(loss),
                 _finite(scores.metric()), eval_examples=scores.num_examples, margin=margin)


def trial_scores(config: ml_collections.ConfigDict, state) -> ExampleScores:
    """The per-example outcomes of a trial's final `state` on `trial_eval_split(config)`."""
    scored = ml_collections.ConfigDict(config.to_dict())
    scored.data.eval_split = trial_eval_split(config).name
    pipeline = build_input(scored)
    labels, predictions = eval_predictions(state, pipeline, partitioning.make_mesh(),
                                           int(config.training.eval_batch_size))
    return ExampleScores.from_predictions(pipeline.info.task, labels, predictions, pipeline.info.num_classes)


def _finite(value) -> float:
    value = float(value) if value is not None else math.nan
    return value if math.isfinite(value) else math.nan


def _verify(trial: Trial, baseline: Trial) -> Trial:
    """`trial` with its margin (none for the baseline) and whether it is verified: it ran, left no warning or
    error and beat the baseline by the margin (any finite metric beats a baseline without one). The margin is the
    paired one measured with the trial; a trial without it (scored on other examples than the baseline, or read
    from an older repair.json) gets the unpaired `noise_margin`."""
    if trial.is_baseline:
        return dataclasses.replace(trial, verified=False, margin=math.nan)
    if not math.isfinite(baseline.metric):
        margin = 0.0
    elif math.isfinite(trial.margin):
        margin = trial.margin
    else:
        margin = noise_margin(baseline.metric, trial.metric, baseline.eval_examples, trial.eval_examples)
    gain = trial.metric - baseline.metric if math.isfinite(baseline.metric) else math.inf
    return dataclasses.replace(trial, margin=margin, verified=trial.error is None and not trial.findings_left
                               and math.isfinite(trial.metric) and gain >= margin)


def within_noise(trial: Trial, baseline: Trial) -> bool:
    """A clean trial that the comparison cannot tell from the baseline: its metric is within its margin of the
    baseline's, above or below (a clean fix a little behind the baseline in a short trial may still be ahead in a
    longer one, as one a little ahead may not)."""
    return (not trial.is_baseline and trial.error is None and not trial.findings_left and not trial.verified
            and abs(trial.metric - baseline.metric) < trial.margin)


def baseline_of(trial: Trial, trials) -> Trial:
    """The baseline among `trials` that `trial` is compared with: the one trained as many steps."""
    return next(t for t in trials if t.is_baseline and t.steps == trial.steps)


def rank_trials(trials: list[Trial]) -> list[Trial]:
    """Marks verified trials (`_verify`, each against the baseline of its look) and sorts: verified first, then
    fewer findings left, higher metric, lower loss."""
    marked = [_verify(t, baseline_of(t, trials)) for t in trials]

    def key(t: Trial):
        return (not t.verified, t.error is not None, len(t.findings_left),
                -(t.metric if math.isfinite(t.metric) else -1.0), t.loss if math.isfinite(t.loss) else math.inf)

    return sorted(marked, key=key)


def rerun_command(workdir: str, overrides: dict) -> str:
    """The command that reruns the run of `workdir` (its config.json) with `overrides`, into a new workdir."""
    target = workdir.rstrip("/") + "_repaired"
    return (f"python main.py --workdir={shlex.quote(target)} "
            f"--config={shlex.quote('configs/workdir.py:' + workdir)} {override_flags(overrides)}")


def repair_settings(config: ml_collections.ConfigDict, workdir: str) -> dict:
    """The REPAIR_FIELDS in which `config` (main.py's --config in repair mode) differs from the run's own; an
    InputError when it differs in any other field: a repair reproduces the run as it was configured."""
    given, run = flattened(config), flattened(load_run_config(workdir))
    changed = sorted(key for key in given.keys() | run.keys() if given.get(key) != run.get(key))
    other = [key for key in changed if key not in REPAIR_FIELDS]
    if other:
        raise InputError(
            f"--mode=repair repairs the run as {os.path.join(workdir, 'config.json')} configures it, but --config "
            f"differs in {', '.join(other[:3])}{' ...' if len(other) > 3 else ''}: leave --config out, or pass "
            f"--config=configs/workdir.py:{workdir} with only {' / '.join('--config.' + f for f in REPAIR_FIELDS)}.")
    return {key: given[key] for key in changed}


def repair(workdir: str, settings: dict | None = None) -> RepairResult:
    """Runs the trials for the run in `workdir` (its config, with `settings`: REPAIR_FIELDS overrides) and writes
    repair.json and the report section."""
    config = apply_overrides(load_run_config(workdir), settings or {})
    run = diagnostics.load_records(workdir)
    if not run.train:
        raise InputError(f"{workdir!r} has no train records yet; repair needs at least one evaluation.")
    findings = diagnostics.analyze(workdir, write=False)
    run_steps, steps_per_epoch = int(run.train[-1].num_train_steps), int(run.train[-1].steps_per_epoch)
    main = next((f for f in _severe(findings) if f.steps), None)
    budget, metric = repair_budget(config, run_steps, main.steps[1] if main else 0), metric_name(run)
    base = trial_config(config, budget, steps_per_epoch)
    directory = _look_directory(workdir)
    plan = [("baseline", {}, ())] + candidates(findings, base)
    logging.info("Repair of %s: %d trials of %d steps.", workdir, len(plan), budget)
    trials = _run_all(base, directory, plan)
    for _ in range(LR_SEARCH_ROUNDS):
        proposal = next_lr(rank_trials(trials))
        if proposal is None:
            break
        logging.info("Repair of %s: no verified fix yet; trying LR %g.", workdir, *proposal[1].values())
        trials += _run_all(base, directory, [proposal])
    plan = second_look(trials)
    if plan:
        steps = LONGER * budget
        logging.info("Repair of %s: within the noise; a second look at %d steps.", workdir, steps)
        trials += _run_all(trial_config(config, steps, steps_per_epoch), _look_directory(workdir, steps), plan,
                           suffix=f"@{steps}")
    result = ranked_result(workdir, metric, budget, tuple(f.id for f in _severe(findings)), trials,
                           trial_eval_split(config))
    write_repair(result)
    return result


def ranked_result(workdir: str, metric: str, budget: int, findings: tuple[str, ...], trials: list[Trial],
                  eval_split: EvalSplit | None = None) -> RepairResult:
    """The repair's result from its trials (the baseline among them): ranked by `rank_trials`, with the rerun
    command of the best verified fix."""
    ranked = rank_trials(trials)
    best = next((t for t in ranked if t.verified), None)
    return RepairResult(workdir, metric, budget, findings, tuple(ranked),
                        rerun_command(workdir, best.overrides) if best else None, eval_split)


def _run_all(config: ml_collections.ConfigDict, directory: str, plan: list, suffix: str = "") -> list[Trial]:
    """`run_trial` for each (name, overrides, finding ids) of `plan`, into `directory/<name>`, each candidate
    paired with the baseline's scores (the baseline runs first); `suffix` is appended to the trials' names."""
    trials = []
    for name, overrides, ids in plan:
        baseline = ExampleScores.load(os.path.join(directory, "baseline")) if name != "baseline" else None
        trial = run_trial(config, os.path.join(directory, name), name + suffix, overrides, ids, baseline)
        trials.append(dataclasses.replace(trial, steps=int(config.training.num_train_steps)))
    return trials


def _look_directory(workdir: str, steps: int = 0) -> str:
    """Where a repair's trials train: `diagnostics/repair`, and `diagnostics/repair/at_<steps>` for the second
    look's."""
    return os.path.join(workdir, "diagnostics", "repair", *([f"at_{steps}"] if steps else []))


def trial_directory(workdir: str, trial: Trial) -> str:
    """The workdir of `trial` of the repair of `workdir` (its name, `name@steps` in the second look)."""
    name, _, steps = trial.name.partition("@")
    return os.path.join(_look_directory(workdir, int(steps or 0)), name)


def second_look(trials: list[Trial]) -> list[tuple[str, dict, tuple[str, ...]]]:
    """The plan of the second look: the baseline and the LONGER_TRIALS best clean trials within the noise of it
    (`within_noise`); empty when a trial verified or none was within the noise."""
    ranked = rank_trials(trials)
    if any(t.verified for t in ranked):
        return []
    noisy = [t for t in ranked if within_noise(t, baseline_of(t, ranked))][:LONGER_TRIALS]
    return [("baseline", {}, ())] + [(t.name, t.overrides, t.addresses) for t in noisy] if noisy else []


def format_repair(result: RepairResult) -> str:
    """The ranked trials as a markdown table, and the rerun command (or why there is none)."""
    base, split = result.baseline, result.eval_split
    where = f" of {split.name} ({split.reason})" if split else ""
    lines = [f"Trials of {result.budget} steps from the run's initial state (a second look at {LONGER}x the steps "
             "when the first could not tell a clean trial from noise, name@steps); run findings: "
             f"{', '.join(result.findings) or 'none'}; metric {result.metric} on {base.eval_examples or '?'} eval "
             f"examples{where}; a fix must gain its noise margin over the baseline of its look ({NOISE_Z} standard "
             f"errors of the difference, paired over the same examples, at least {MIN_GAIN}).", "",
             f"| rank | trial | overrides | findings left | loss | {result.metric} | vs baseline | noise | verified |",
             "|---|---|---|---|---|---|---|---|---|"]
    noisy = None
    for rank, t in enumerate(result.trials, start=1):
        left = t.error or (", ".join(t.findings_left) or "none")
        delta = f"{t.metric - result.baseline_for(t).metric:+.4f}" if not t.is_baseline else "baseline"
        within = within_noise(t, result.baseline_for(t))
        noisy = noisy or (t if within else None)
        verdict = "yes" if t.verified else "no: within noise" if within else "no"
        lines.append(f"| {rank} | {t.name} | {override_flags(t.overrides) or '(none)'} | {left} | {t.loss:.4g} | "
                     f"{t.metric:.4f} | {delta} | {_noise(t.margin)} | {verdict} |")
    lines.append("")
    if result.command:
        lines.append(f"Rerun with the best verified fix:\n\n    {result.command}")
    elif noisy:
        lines.append(f"No verified fix: {noisy.name} left no warning or error, but its "
                     f"{noisy.metric - result.baseline_for(noisy).metric:+.3f} over the baseline is within the "
                     f"eval's noise ({_noise(noisy.margin)}); a longer trial (diagnostics.repair_steps) or a larger "
                     "eval split (diagnostics.repair_eval_split) would tell.")
    else:
        lines.append("No verified fix: no trial removed every warning and error while beating the baseline's "
                     f"{result.metric}.")
    return "\n".join(lines)


def _noise(margin: float) -> str:
    """A trial's margin as the table prints it."""
    return "-" if math.isnan(margin) else "unknown size" if math.isinf(margin) else f"±{margin:.3f}"


def write_repair(result: RepairResult) -> None:
    """Writes `diagnostics/repair.json` and replaces (or appends) the repair section of `report.md`."""
    directory = os.path.join(result.workdir, "diagnostics")
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "repair.json"), "w") as f:
        json.dump(result.to_json(), f, indent=2)
    path = os.path.join(directory, "report.md")
    text = open(path).read() if os.path.exists(path) else ""
    text = re.split(rf"^{re.escape(SECTION)}$", text, flags=re.MULTILINE)[0].rstrip("\n")
    with open(path, "w") as f:
        f.write((text + "\n\n" if text else "") + f"{SECTION}\n\n{format_repair(result)}\n")


def auto_repair(config: ml_collections.ConfigDict, workdir: str) -> RepairResult | None:
    """With `config.diagnostics.auto_repair`, repairs a finished run whose findings include an error."""
    if not config.diagnostics.get("auto_repair", False) or not config.diagnostics.enabled:
        return None
    if not any(f.severity == "error" for f in diagnostics.analyze(workdir, write=False)):
        return None
    result = repair(workdir)
    print(format_repair(result))
    return result
