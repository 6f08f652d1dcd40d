"""The analyzer: reads a workdir's typed records (finished or still running), applies every rule, checks each
recommendation against the run's config, and ranks the findings (causes before the symptoms they explain)."""

import json
import os

from visioncore_jax.diagnostics.advice import checked_finding
from visioncore_jax.diagnostics.findings import Finding
from visioncore_jax.diagnostics.rules import CATALOG, rank
from visioncore_jax.diagnostics.schema import (
    EVAL_FILE,
    FINDINGS_FILE,
    SCHEMA_VERSION,
    TRAIN_FILE,
    EvalRecord,
    RunRecords,
    TrainRecord,
    drop_unoptimized_l2,
    format_number,
    read_record,
)


def _read_jsonl(path: str) -> list[TrainRecord | EvalRecord]:
    """Typed records of one file; a partial last line (a run writing right now, or killed) is ignored."""
    records = []
    with open(path) as f:
        lines = f.readlines()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines):
                break
            raise ValueError(f"{path}:{number} is not valid JSON; the file is corrupt. Delete it and rerun the "
                             "training command to rewrite it from the checkpoints on.") from None
        records.append(read_record(value, f"{path}:{number}"))
    return records


def _read_config(workdir: str) -> dict:
    """The run's config.json as a nested dict ({} when there is none)."""
    config_path = os.path.join(workdir, "config.json")
    if not os.path.exists(config_path):
        return {}
    with open(config_path) as f:
        try:
            return json.load(f)
        except json.JSONDecodeError as e:
            raise ValueError(f"{config_path} is not valid JSON ({e}). Rewrite it from the run's config, or delete "
                             "it: the rules then read only the records.") from None


def load_records(workdir: str) -> RunRecords:
    """The typed train and eval records and config of `workdir`; raises FileNotFoundError saying what to run
    when the workdir holds no diagnostics."""
    directory = os.path.join(workdir, "diagnostics")
    train_path, eval_path = os.path.join(directory, TRAIN_FILE), os.path.join(directory, EVAL_FILE)
    if not os.path.exists(train_path):
        raise FileNotFoundError(
            f"{train_path} does not exist: {workdir!r} has no diagnostics records. Train into it first "
            "(python main.py --workdir=... --config=...), with --config.diagnostics.enabled=True (the default); "
            "records appear after the first evaluation.")
    config = _read_config(workdir)
    optimizer = str((config.get("optimizer") or {}).get("name") or "")
    train = [drop_unoptimized_l2(r, optimizer) for r in _read_jsonl(train_path) if isinstance(r, TrainRecord)]
    evals = [r for r in _read_jsonl(eval_path) if isinstance(r, EvalRecord)] if os.path.exists(eval_path) else []
    return RunRecords(train=tuple(train), eval=tuple(evals), config=config)


def analyze_records(run: RunRecords) -> list[Finding]:
    """Every rule's findings with the recommendations valid for the run, ranked (see `rules.rank`)."""
    task = run.eval[-1].task if run.eval else "classification"
    findings = [checked_finding(f, run.config, task) for rule in CATALOG for f in rule.check(run)]
    return rank(findings)


def write_findings(workdir: str, findings: list[Finding]) -> str:
    """Writes `workdir/diagnostics/findings.json`; returns its path."""
    path = os.path.join(workdir, "diagnostics", FINDINGS_FILE)
    with open(path, "w") as f:
        json.dump({"schema_version": SCHEMA_VERSION, "findings": [x.to_json() for x in findings]}, f, indent=2)
    return path


def analyze(workdir: str, write: bool = True) -> list[Finding]:
    """Analyzes the run in `workdir` (finished or in progress); writes findings.json when `write`."""
    findings = analyze_records(load_records(workdir))
    if write:
        write_findings(workdir, findings)
    return findings


def format_findings(findings: list[Finding]) -> str:
    """Human-readable findings: severity, id, summary, evidence and the overrides to try."""
    if not any(f.severity != "info" for f in findings):
        lines = ["No problems found: no warnings or errors."]
    else:
        lines = [f"{sum(f.severity == 'error' for f in findings)} error(s), "
                 f"{sum(f.severity == 'warning' for f in findings)} warning(s):"]
    for finding in findings:
        where = f" steps {finding.steps[0]}-{finding.steps[1]}" if finding.steps else ""
        lines.append(f"\n[{finding.severity.upper()}] {finding.id}{where}: {finding.summary}")
        lines.append(f"  {finding.explanation}")
        evidence = ", ".join(f"{k}={format_number(v)}" for k, v in finding.evidence.items())
        lines.append(f"  evidence: {evidence}")
        for rank_, recommendation in enumerate(finding.recommendations, start=1):
            lines.append(f"  try {rank_}: {recommendation}")
    return "\n".join(lines)
