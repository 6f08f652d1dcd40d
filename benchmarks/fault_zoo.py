r"""The fault zoo as a benchmark: does the analyzer (run findings) or preflight (checks) name each injected fault
first, on runs outside the test zoo, and stay silent on healthy runs? Optionally: does verified repair fix them?

  flock /tmp/vcj-heavy.lock python -m benchmarks.fault_zoo --out=/tmp/fault_zoo/results.json
  python -m benchmarks.fault_zoo --ids=nonfinite,lr_too_high --half=held_out --max_runs=4
  python -m benchmarks.fault_zoo --repair --only=lr_too_high/1-video_convgru-clips   # repair one trained run
  python -m benchmarks.fault_zoo --summarize --out=/tmp/fault_zoo/results.json   # tables only
  python -m benchmarks.fault_zoo --rescore --out=/tmp/fault_zoo/results.json     # kept repairs, today's criterion

Runs are in benchmarks/zoo_variants.py (>= 3 per catalog id, 5 model families, 4 datasets incl. scikit-learn's
digits as an image folder; variant k is calibration when k is even, held-out when odd). Results are appended to
`--out` after every run, so an interrupted benchmark keeps what it measured; rerunning skips runs already there.
"""

import concurrent.futures
import dataclasses
import json
import math
import multiprocessing
import os
import shutil
import time

from absl import app, flags

from benchmarks.zoo_variants import Context, Variant, build_run, variants

flags.DEFINE_string("scratch", "/tmp/fault_zoo", "Workdirs, TFDS data and the digits image folders.")
flags.DEFINE_string("out", "", "Results JSON (default: <scratch>/results.json); runs already in it are skipped.")
flags.DEFINE_list("ids", [], "Only these catalog ids ('healthy' for the healthy runs).")
flags.DEFINE_list("only", [], "Only these runs, by name (e.g. lr_too_high/1-video_convgru-clips).")
flags.DEFINE_enum("half", "both", ["both", "calibration", "held_out"], "Which half of the variants.")
flags.DEFINE_integer("max_runs", 0, "Stop after this many new runs (0: all).")
flags.DEFINE_integer("jobs", 1, "Runs in parallel processes (1 on a shared 2-core machine).")
flags.DEFINE_bool("repair", False, "Also run verified repair on faulty runs whose fault is in the config alone "
                  "(first on the selected runs already trained, then on new ones).")
flags.DEFINE_bool("summarize", False, "Only print the tables of --out.")
flags.DEFINE_bool("reanalyze", False, "Analyse the trained runs' kept workdirs again with the current rules, "
                  "update --out, print the tables (no training).")
flags.DEFINE_bool("rescore", False, "Re-rank the kept repairs' trials (<scratch>/runs/<run>/diagnostics/repair.json) "
                  "with the current verification rule, update --out, print the tables (no training; the "
                  "workdirs are not written).")
FLAGS = flags.FLAGS

STATUS_ORDER = {"FAIL": 0, "WARN": 1}


def _metric(workdir: str) -> float | None:
    """The last eval record's accuracy (mean Dice for segmentation)."""
    from visioncore_jax import diagnostics

    evals = diagnostics.load_records(workdir).eval
    if not evals:
        return None
    value = evals[-1].mean_dice if evals[-1].task == "segmentation" else evals[-1].accuracy
    return float(value) if math.isfinite(value) else None


def ranking(ids: list[str], explained, expected: str | None, cause: str | None) -> tuple[bool, bool, bool]:
    """(top-1, top-3, named through its cause) of a run whose warnings/errors are `ids` in rank order, the first
    of them explaining the symptoms `explained`. A healthy run (`expected` None) scores when nothing is flagged;
    `cause` first, explaining `expected`, names the fault."""
    if expected is None:
        return not ids, not ids, False
    by_cause = bool(ids) and cause is not None and ids[0] == cause and expected in explained
    return (bool(ids) and ids[0] == expected) or by_cause, expected in ids[:3] or by_cause, by_cause


def analyze_run(row: dict, workdir: str, variant: Variant) -> list[str]:
    """Fills `row` from the analyzer's findings on a trained run's `workdir`: flagged ids in rank order, the first
    recommendation, the final metric, top-1 / top-3 (`variant.cause` first, explaining `expected`, counts as
    named first). Returns the flagged ids."""
    from visioncore_jax import diagnostics

    findings = [f for f in diagnostics.analyze(workdir) if f.severity != "info"]
    ids = [f.id for f in findings]
    row["flagged"] = [f"{f.id}:{f.severity}" for f in findings]
    row["first_recommendation"] = findings[0].recommendations[0] if findings and findings[0].recommendations \
        else None
    row["metric"] = _metric(workdir)
    explained = findings[0].evidence.get("explains", ()) if findings else ()
    row["top1"], row["top3"], row["named_by_cause"] = ranking(ids, explained, variant.expected, variant.cause)
    return ids


def reanalyze(rows: list[dict], scratch: str) -> int:
    """Re-runs `analyze_run` on every trained row whose workdir is kept; returns how many were updated."""
    by_name = {v.name: v for v in variants()}
    updated = 0
    for row in rows:
        variant = by_name.get(row["name"])
        workdir = _workdir(scratch, row["name"])
        if variant and variant.kind == "run" and "error" not in row and os.path.isdir(workdir):
            analyze_run(row, workdir, variant)
            updated += 1
    return updated


def _workdir(scratch: str, name: str) -> str:
    return os.path.join(scratch, "runs", name.replace("/", "__"))


def run_variant(variant: Variant, ctx: Context, repair: bool) -> dict:
    """Runs one variant; returns its result row (flagged ids in rank order, top-1 / top-3, wall time)."""
    from visioncore_jax.tools.overrides import apply_overrides
    from visioncore_jax.tools.preflight import CHECKS, run_preflight
    from visioncore_jax.train import train_and_evaluate
    from visioncore_jax.train.experiment import build_experiment

    row = {"name": variant.name, "expected": variant.expected, "kind": variant.kind, "family": variant.family,
           "dataset": variant.dataset, "magnitude": variant.magnitude, "half": variant.half,
           "overrides": {k: repr(v) for k, v in variant.overrides.items()}, "api": variant.api is not None}
    workdir = _workdir(ctx.scratch, variant.name)
    shutil.rmtree(workdir, ignore_errors=True)
    start = time.perf_counter()
    try:
        config, api = build_run(variant, ctx)
        if variant.kind == "preflight":
            results = run_preflight(build_experiment(config, **api))
            flagged = sorted((r for r in results if r.status != "PASS"),
                             key=lambda r: (STATUS_ORDER[r.status], list(CHECKS).index(r.id)))
            row["flagged"] = [f"{r.id}:{r.status}" for r in flagged]
            ids = [r.id for r in flagged]
        else:
            train_and_evaluate(config, workdir, **api)
            if variant.resume:
                train_and_evaluate(apply_overrides(config, variant.resume), workdir, **api)
            ids = analyze_run(row, workdir, variant)
    except Exception as error:  # one broken variant must not end the benchmark
        row.update(error=f"{type(error).__name__}: {str(error)[:300]}", flagged=[], wall_s=time.perf_counter() - start)
        return row
    row["wall_s"] = time.perf_counter() - start
    if variant.kind == "preflight":
        row["top1"] = bool(ids) and ids[0] == variant.expected if variant.expected else not ids
        row["top3"] = variant.expected in ids[:3] if variant.expected else not ids
    if repair and _repairable(variant):
        repair_row(row, workdir)
    return row


def _repairable(variant: Variant) -> bool:
    """A faulty trained run whose fault is in its config alone (repair reads the config from the workdir)."""
    return bool(variant.expected) and variant.kind == "run" and variant.config_route


def repair_row(row: dict, workdir: str) -> None:
    """Runs verified repair on a trained run's `workdir`; stores the outcome as `row['repair']`."""
    from visioncore_jax.tools import repair as repair_tool

    start = time.perf_counter()
    try:
        result = repair_tool.repair(workdir)
        row["repair"] = repair_outcome(result) | {"wall_s": time.perf_counter() - start}
    except Exception as error:
        row["repair"] = {"verified": False, "error": f"{type(error).__name__}: {str(error)[:200]}"}


def repair_outcome(result) -> dict:
    """A repair's row entry: verified, the best verified trial and its command, and the gain over the baseline and
    the margin it needed of the best verified trial (else the best clean one, `candidate`)."""
    candidate = result.best or next((t for t in result.trials if not t.is_baseline and t.error is None
                                     and not t.findings_left), None)
    return {"verified": result.best is not None, "best": result.best.name if result.best else None,
            "command": result.command, "trials": len(result.trials), "budget": result.budget,
            "candidate": candidate.name if candidate else None,
            "gain": candidate.metric - result.baseline_for(candidate).metric if candidate else None,
            "margin": candidate.margin if candidate else None,
            "eval_examples": result.baseline.eval_examples}


def rescore_row(row: dict, workdir: str) -> None:
    """Re-ranks the kept repair of `workdir` (its repair.json, each trial's eval records and per-example scores) by
    the current rule and updates `row['repair']` (its wall time kept); the trials' findings are the stored ones,
    their margins today's: paired from their scores, else unpaired."""
    from visioncore_jax.tools import repair as repair_tool

    with open(os.path.join(workdir, "diagnostics", "repair.json")) as f:
        saved = json.load(f)
    trials = [repair_tool.Trial.from_json(t) for t in saved["trials"]]
    trials = [dataclasses.replace(t, eval_examples=t.eval_examples or _eval_examples(
        repair_tool.trial_directory(workdir, t)), margin=_paired_margin(workdir, t, trials)) for t in trials]
    result = repair_tool.ranked_result(saved["workdir"], saved["metric"], saved["budget"], tuple(saved["findings"]),
                                       trials)
    row["repair"] = repair_outcome(result) | {"wall_s": row["repair"].get("wall_s")}


def _paired_margin(workdir: str, trial, trials) -> float:
    """Today's paired margin of `trial` over the baseline of its look, from their stored per-example scores; NaN
    (the unpaired margin) when either has none."""
    from visioncore_jax.tools import repair as repair_tool
    from visioncore_jax.tools.verification import ExampleScores, paired_margin

    scores, base = (ExampleScores.load(repair_tool.trial_directory(workdir, t))
                    for t in (trial, repair_tool.baseline_of(trial, trials)))
    if trial.is_baseline or scores is None or base is None or not base.pairs_with(scores):
        return math.nan
    return paired_margin(base, scores)


def _eval_examples(trial_dir: str) -> int:
    """The eval examples behind a trial's last eval record: its `num_examples`; for records written before that
    field, the confusion matrix's count (pixels, for segmentation, divided by the config's image size squared)."""
    from visioncore_jax import diagnostics

    run = diagnostics.load_records(trial_dir)
    record = run.eval[-1]
    if record.num_examples or record.confusion is None:
        return record.num_examples
    total = sum(map(sum, record.confusion))
    return total // run.config["data"]["image_size"] ** 2 if record.task == "segmentation" else total


def rescore(rows: list[dict], scratch: str) -> int:
    """`rescore_row` on every row with a repair whose workdir keeps its repair.json; returns how many."""
    done = 0
    for row in rows:
        workdir = _workdir(scratch, row["name"])
        if "repair" in row and os.path.exists(os.path.join(workdir, "diagnostics", "repair.json")):
            rescore_row(row, workdir)
            done += 1
    return done


def repair_done_runs(rows: list[dict], scratch: str, save) -> None:
    """With --repair: repairs the selected runs already trained (workdir kept) that have no repair outcome yet."""
    selected = {v.name: v for v in _selected(variants()) if _repairable(v)}
    pending = [r for r in rows if r["name"] in selected and "repair" not in r and "error" not in r
               and os.path.isdir(_workdir(scratch, r["name"]))]
    for row in pending[:FLAGS.max_runs or None]:
        repair_row(row, _workdir(scratch, row["name"]))
        print(f"{row['name']}: repair verified={row['repair']['verified']} best={row['repair'].get('best')}",
              flush=True)
        save()


def _load(path: str) -> list[dict]:
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return json.load(f)["runs"]


def _save(path: str, rows: list[dict]) -> None:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path + ".tmp", "w") as f:
        json.dump({"runs": rows}, f, indent=1)
    os.replace(path + ".tmp", path)


def _rejected_up_front(row: dict) -> bool:
    """A faulty run that input validation stopped with its one-line `InputError` (before any data was read or
    anything compiled): the user was told the problem first, so it counts as named first."""
    return bool(row["expected"]) and row.get("error", "").startswith("InputError")


def _named(row: dict, key: str) -> bool:
    """Whether the run's fault was named first (`key` 'top1') or in the first three ('top3')."""
    return bool(row.get(key)) or _rejected_up_front(row)


def summarize(rows: list[dict]) -> str:
    """Markdown tables: per id top-1 / top-3 on each half, healthy runs, repair, wall time."""
    lines = ["| id | kind | calibration top-1 | calibration top-3 | held-out top-1 | held-out top-3 | "
             "what came first when missed |", "|---|---|---|---|---|---|---|"]
    faulty = [r for r in rows if r["expected"]]
    for finding_id in dict.fromkeys(r["expected"] for r in faulty):
        own = [r for r in faulty if r["expected"] == finding_id]
        cells = []
        for half in ("calibration", "held_out"):
            part = [r for r in own if r["half"] == half]
            cells += [f"{sum(_named(r, 'top1') for r in part)}/{len(part)}",
                      f"{sum(_named(r, 'top3') for r in part)}/{len(part)}"]
        missed = [r.get("error", "").split(":")[0] or (r["flagged"][0] if r["flagged"] else "nothing")
                  for r in own if not _named(r, "top1")]
        rejected = sum(_rejected_up_front(r) for r in own)
        by_cause = sum(bool(r.get("named_by_cause")) for r in own)
        note = (f" ({rejected} stopped by input validation)" if rejected else "") + \
            (f" ({by_cause} named through their cause)" if by_cause else "")
        lines.append(f"| `{finding_id}` | {own[0]['kind']}{note} | " + " | ".join(cells) + f" | {', '.join(missed)} |")
    for half in ("calibration", "held_out"):
        part = [r for r in faulty if r["half"] == half]
        if part:
            top1 = sum(_named(r, "top1") for r in part)
            lines.append(f"\n**{half}**: top-1 {top1}/{len(part)} ({100 * top1 / len(part):.0f}%), top-3 "
                         f"{sum(_named(r, 'top3') for r in part)}/{len(part)}.")
    healthy = [r for r in rows if not r["expected"]]
    if healthy:
        lines += ["", "| healthy run | kind | warnings/errors | final metric |", "|---|---|---|---|"]
        for r in healthy:
            metric = f"{r['metric']:.3f}" if r.get("metric") is not None else "-"
            lines.append(f"| {r['name']} | {r['kind']} | {', '.join(r['flagged']) or r.get('error', 'none')} | "
                         f"{metric} |")
        alarms = sum(bool(r["flagged"]) or "error" in r for r in healthy)
        lines.append(f"\nFalse alarms: {alarms} of {len(healthy)} healthy runs.")
    repaired = [r for r in rows if "repair" in r]
    if repaired:
        lines += ["", "| repaired run | half | verified | trial (best verified, else best clean) | gain | margin |",
                  "|---|---|---|---|---|---|"]
        for r in repaired:
            rep = r["repair"]
            gain, margin = rep.get("gain"), rep.get("margin")
            lines.append(f"| {r['name']} | {r['half']} | {'yes' if rep['verified'] else 'no'} | "
                         f"{rep.get('candidate') or rep.get('best') or '-'} | "
                         f"{'-' if gain is None else f'{gain:+.3f}'} | {'-' if margin is None else f'{margin:.3f}'} |")
        halves = [(half, [r for r in repaired if r["half"] == half]) for half in ("calibration", "held_out")]
        costs = [r["repair"]["wall_s"] / r["wall_s"] for r in repaired if r["repair"].get("wall_s")]
        lines.append("\nRepair: a verified fix for " + ", ".join(
            f"{sum(r['repair']['verified'] for r in part)} of {len(part)} {half}" for half, part in halves if part)
            + f" faulty config-route runs; repair wall time {sum(costs) / max(len(costs), 1):.1f}x the faulty "
            "run's on average.")
    wall = sum(r.get("wall_s", 0.0) for r in rows)
    lines.append(f"\n{len(rows)} runs, {wall / 60:.1f} min of wall time (mean {wall / max(len(rows), 1):.0f} s).")
    return "\n".join(lines)


def _selected(all_variants: list[Variant]) -> list[Variant]:
    ids = set(FLAGS.ids)
    chosen = [v for v in all_variants if (not ids or (v.expected or "healthy") in ids)
              and (FLAGS.half == "both" or v.half == FLAGS.half) and (not FLAGS.only or v.name in FLAGS.only)]
    # Interleave by variant index, so a benchmark cut short covers every id before its second variant.
    return sorted(chosen, key=lambda v: v.index)


def _worker(name: str, scratch: str, repair: bool) -> dict:
    variant = next(v for v in variants() if v.name == name)
    return run_variant(variant, Context(scratch), repair)


def main(argv):
    del argv
    out = FLAGS.out or os.path.join(FLAGS.scratch, "results.json")
    rows = _load(out)
    if FLAGS.summarize:
        print(summarize(rows))
        return
    if FLAGS.reanalyze or FLAGS.rescore:  # no training: the kept workdirs, today's rules / verification
        if FLAGS.reanalyze:
            print(f"re-analysed {reanalyze(rows, FLAGS.scratch)} runs")
        if FLAGS.rescore:
            print(f"re-scored {rescore(rows, FLAGS.scratch)} repairs")
        _save(out, rows)
        print(summarize(rows))
        return
    if FLAGS.repair:
        repair_done_runs(rows, FLAGS.scratch, lambda: _save(out, rows))
    done = {r["name"] for r in rows}
    todo = [v for v in _selected(variants()) if v.name not in done]
    if FLAGS.max_runs:
        todo = todo[:FLAGS.max_runs]
    ctx = Context(FLAGS.scratch)
    if FLAGS.jobs > 1:
        context = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(FLAGS.jobs, mp_context=context) as pool:
            for row in pool.map(_worker, [v.name for v in todo], [FLAGS.scratch] * len(todo),
                                [FLAGS.repair] * len(todo)):
                rows.append(row)
                _save(out, rows)
    else:
        for variant in todo:
            row = run_variant(variant, ctx, FLAGS.repair)
            print(f"{variant.name}: flagged {row['flagged'][:3]} top1={row.get('top1')} "
                  f"{row.get('error', '')} ({row.get('wall_s', 0):.0f} s)", flush=True)
            rows.append(row)
            _save(out, rows)
    print(summarize(rows))


if __name__ == "__main__":
    app.run(main)

